"""PostgreSQL access for the application tables (schema ``public``): pure functions on a
SQLAlchemy connection, so assets, the CLI and tests share them."""
