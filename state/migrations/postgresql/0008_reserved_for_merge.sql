-- Placeholder: version 8 belongs to another branch's migration. The numbering
-- must be contiguous (state.db.bundled_migrations), so this branch carries an
-- empty step 8 until the merge replaces it with the real one.
SELECT 1;
