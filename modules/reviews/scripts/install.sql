-- The whole 1.1.0 schema of the reviews module.
CREATE TABLE reviews (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    stars       INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
    body        TEXT
);

CREATE VIEW review_pages AS
    SELECT reviews.id, reviews.stars, '/customers/' || customers.slug AS customer_page
    FROM reviews JOIN customers ON customers.id = reviews.customer_id;
