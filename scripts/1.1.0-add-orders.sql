CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    placed_at   TEXT NOT NULL DEFAULT (datetime('now')),
    note        TEXT -- free text; may contain ';' safely
);
INSERT INTO orders (customer_id, note) SELECT id, 'welcome; first order' FROM customers;
