-- Shared mailboxes (and those whose settings answered 403) are found by an
-- index on the stored mailboxSettings' userPurpose, so a run does not read
-- every user's and every mailbox's copy to know which mailboxes are shared.
CREATE INDEX graph_objects_mailbox_purpose ON graph_objects (tenant, ((data)::jsonb ->> 'userPurpose'))
    WHERE kind = 'mailbox';
-- And a user by UPN (case-insensitive): shared_mailbox.mailboxes names them so,
-- looked up on every run.
CREATE INDEX graph_objects_user_upn ON graph_objects (tenant, lower(((data)::jsonb ->> 'userPrincipalName')))
    WHERE kind = 'user';
