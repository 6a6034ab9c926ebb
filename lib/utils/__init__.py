"""Small process-level helpers: logging set-up, seeding, and running the CLIs as subprocesses."""
