-- Reserved: version 0016 belongs to another branch of this work; this file stands in
-- so the numbers have no gap, and goes when that branch's migration is merged.
SELECT 1;
