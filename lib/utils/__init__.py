"""Small process-level helpers: logging set-up and seeding."""
