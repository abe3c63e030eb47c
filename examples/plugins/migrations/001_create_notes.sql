-- The notes table, with two notes to start from.
CREATE TABLE notes (
    id    INTEGER PRIMARY KEY,
    title TEXT NOT NULL UNIQUE,
    body  TEXT NOT NULL
);

INSERT INTO notes (title, body) VALUES
    ('Rotate the keys', 'Quarterly: rotate the plugin signing keys.'),
    ('Welcome', 'Notes live in data/notes.db.');
