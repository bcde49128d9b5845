-- The whole 1.4.0 schema, for a database that starts empty (the demo_steps plugin
-- fills the slugs after this script; see upgrade.xml).
CREATE TABLE customers (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    slug  TEXT UNIQUE
);

CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    placed_at   TEXT NOT NULL DEFAULT (datetime('now')),
    note        TEXT,
    total_cents INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE order_audit (
    id         INTEGER PRIMARY KEY,
    order_id   INTEGER NOT NULL,
    changed_at TEXT NOT NULL DEFAULT (datetime('now')),
    what       TEXT NOT NULL
);

-- The semicolons inside the trigger body do not end the statement.
CREATE TRIGGER orders_audit AFTER UPDATE ON orders
BEGIN
    INSERT INTO order_audit (order_id, what) VALUES (NEW.id, 'updated; total ' || NEW.total_cents);
END;

INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com'), ('Grace', 'grace@example.com');
