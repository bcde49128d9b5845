CREATE TABLE greetings (id INTEGER PRIMARY KEY, text VARCHAR(200) NOT NULL);
INSERT INTO greetings (id, text) VALUES (1, 'Hello');
