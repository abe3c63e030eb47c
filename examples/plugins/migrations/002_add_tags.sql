-- A tag per note. A new migration changes the schema; an applied one is never edited.
ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT 'misc';

UPDATE notes SET tag = 'ops' WHERE title = 'Rotate the keys';

CREATE INDEX notes_by_tag ON notes (tag);
