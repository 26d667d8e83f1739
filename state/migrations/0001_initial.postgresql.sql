-- The insertion order of runs, which orders runs that started in the same
-- instant (Database.insertion_order): SQLite's rowid is that already.
ALTER TABLE runs ADD COLUMN seq BIGSERIAL;
