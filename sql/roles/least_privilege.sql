-- Least privilege, applied by `mltrading db init --roles` as the database owner (after the
-- tables exist). Two login roles, no passwords here: set them from the environment
-- (MLTRADING_APP_ROLE_PASSWORD, MLTRADING_DAGSTER_ROLE_PASSWORD) or by your own means.
--   mltrading_app     reads and writes the application tables in public; nothing in dagster.
--   mltrading_dagster owns schema dagster (Dagster creates and migrates its tables there);
--                     nothing in public.
-- mltrading_app also owns schema mlflow (the model registry).
-- Idempotent: run it again after an upgrade that adds tables.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mltrading_app') THEN
        CREATE ROLE mltrading_app LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mltrading_dagster') THEN
        CREATE ROLE mltrading_dagster LOGIN;
    END IF;
END
$$;

-- public: only the app role may use it (PostgreSQL grants USAGE to everyone by default).
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO mltrading_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO mltrading_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO mltrading_app;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM mltrading_dagster;

-- dagster: the Dagster role owns the schema and whatever is in it already.
-- mlflow: the model registry belongs to the application; MLflow creates and migrates its
-- tables there when the app role first trains a model.
REVOKE ALL ON SCHEMA dagster FROM PUBLIC;
ALTER SCHEMA dagster OWNER TO mltrading_dagster;
REVOKE ALL ON SCHEMA mlflow FROM PUBLIC;
ALTER SCHEMA mlflow OWNER TO mltrading_app;
DO $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT n.nspname, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('dagster', 'mlflow') AND c.relkind IN ('r', 'p', 'v', 'm')
    LOOP
        -- A table's serial sequences change owner with it.
        EXECUTE format(
            'ALTER TABLE %I.%I OWNER TO %I', item.nspname, item.relname,
            CASE item.nspname WHEN 'dagster' THEN 'mltrading_dagster' ELSE 'mltrading_app' END);
    END LOOP;
END
$$;
