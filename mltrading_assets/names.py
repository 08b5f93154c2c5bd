"""Names several layers must spell the same way: run tags, metadata keys, the partition set,
the pool and the model aliases. Kept here, below everything, so that a change is one edit and
a typo is an ImportError instead of a tag nobody reads. Plain strings: no Dagster import."""

# The dynamic partition set: one partition per symbol.
SYMBOL_PARTITIONS = "symbols"
# The concurrency pool of bar fetching (its limit is in dagster.yaml).
BAR_SOURCE_POOL = "market_data_source"
OWNERS = ["team:mltrading"]
# The environment variable that turns worker hosts on: the broker they take steps from.
BROKER_VARIABLE = "MLTRADING_CELERY_BROKER"
# The live model's asset: launching runs from the terminal asks whether it was materialized.
CHAMPION_MODEL_ASSET = "champion_model"


class RunTags:
    """Tags this project puts on runs (Dagster's own live in ``dagster._core.storage.tags``)."""

    # Which process executes the run, so a run whose process died is found.
    HOST = "mltrading/host"
    PID = "mltrading/pid"

    @staticmethod
    def step_host(step_key: str) -> str:
        """The host a step ran on (a worker host, with Celery)."""
        return f"mltrading/{step_key}.host"

    # The hourly schedule tick a bars run belongs to.
    TICK = "mltrading/tick"
    # The run a features run follows, and the run a predictions run follows.
    FEATURES_AFTER = "mltrading/after_run"
    PREDICTIONS_AFTER = "mltrading/predictions_after_run"
    # A run the universe sensor started to load the history of new symbols.
    NEW_SYMBOLS = "mltrading/new_symbols"
    # The symbols whose history a run re-based (a split): their partitions' metadata says how.
    REBASED = "mltrading/rebased"
    # What a quality checks run records per symbol: CHECKS_RECORD_FAILURES, or (absent)
    # every symbol's evaluation.
    CHECKS_RECORD = "mltrading/checks_record"


CHECKS_RECORD_FAILURES = "failures"


class MetadataKeys:
    """Keys of the per-symbol metadata the workers return and the UI shows."""

    FIRST_BAR = "first_bar"
    LAST_BAR = "last_bar"
    ROWS_WRITTEN = "rows_written"
    DURATION = "duration_s"
    # The host whose worker did the symbol's work.
    HOST = "host"
    CHART = "chart"
    LATEST_VALUES = "latest_values"
    # The source knows the symbol but has no bars in the window asked for.
    NO_BARS = "no_bars_in_window"
    # The symbol's history moved to a new price basis (a split).
    REBASED = "rebased"
    # The holdout scores of model_evaluation, read by the promotion gate.
    SCORES = "scores"


class ModelAliases:
    """MLflow aliases of the registered model."""

    CHAMPION = "champion"
    CHALLENGER = "challenger"
