CREATE TABLE order_audit (
    id         INTEGER PRIMARY KEY,
    order_id   INTEGER NOT NULL,
    changed_at TEXT NOT NULL DEFAULT (datetime('now')),
    what       TEXT NOT NULL
);

CREATE TRIGGER orders_audit AFTER UPDATE ON orders
BEGIN
    INSERT INTO order_audit (order_id, what) VALUES (NEW.id, 'updated; total ' || NEW.total_cents);
END;
