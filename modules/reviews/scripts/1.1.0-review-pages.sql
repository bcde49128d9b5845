CREATE VIEW review_pages AS
    SELECT reviews.id, reviews.stars, '/customers/' || customers.slug AS customer_page
    FROM reviews JOIN customers ON customers.id = reviews.customer_id;
