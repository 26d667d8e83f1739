-- All-day events were placed as UTC days (Graph labels them with the requested
-- zone) and the zones they were created in were not kept. Dropping the stored
-- calendar deltaLinks once makes every calendar be read again from scratch, so
-- each event is stored with originalStartTimeZone/originalEndTimeZone and every
-- wrong busy window is corrected by the next poll.
DELETE FROM delta_links WHERE resource = 'events';
