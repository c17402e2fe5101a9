"""Where a study lives, and the lock that lets several sweeps share it.

`hydra.sweeper.storage` is one of
- `sqlite:///path/optuna.db`             one machine (the default: `<sweep dir>/optuna.db` when null)
- `journal:///path/optuna.journal`       Optuna's journal file: no server, several machines on a shared file system
- `postgresql+psycopg://user:pw@host/db` a database server (`pip install physiotouch[postgres]`)
The job processes open the same storage to report their learning curves (pruning), so it must be reachable from
wherever the jobs run.

`claim_lock` makes "count the study's trials, then ask for new ones" one step across sweeps, so two sweeps started
together on one study run exactly `n_trials` trials between them. Optuna has no such primitive: files are locked with
`flock` beside the file, PostgreSQL with an advisory lock.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from physiotouch.cli import ConfigError, EnvironmentProblem
from physiotouch.utils.locks import FolderLock

JOURNAL = "journal:///"
HEARTBEAT_ATTR = "heartbeat"  # unix time the sweeper last saw the trial's job alive
JOB_DIR_ATTR = "job_dir"  # the trial's run folder (told by the job when it starts, and by the sweeper after it)
PRUNED_ATTR = "pruned_at_epoch"  # the epoch after which the job's pruning callback stopped the trial


def storage_url(configured: str | None, sweep_dir: str | Path) -> str:
    return str(configured) if configured else f"sqlite:///{Path(sweep_dir) / 'optuna.db'}"


def study_name(configured: str | None, job_name: str) -> str:
    """`hydra.sweeper.study_name`, or the job name when null (the sweeper and its jobs must agree)."""
    return str(configured) if configured else job_name


def _with_driver(url: str) -> str:
    """A plain postgresql:// URL with the driver of the [postgres] extra."""
    return "postgresql+psycopg://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url


def _file_of(url: str) -> Path | None:
    """The file of a sqlite or journal storage. sqlite follows SQLAlchemy (sqlite:///relative, sqlite:////absolute);
    a journal URL is a file URL: journal:///abs/path is the absolute /abs/path from any working folder (two sweeps
    started in different folders share it), journal://relative/path is relative."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if url.startswith(JOURNAL):
        return Path("/" + url[len(JOURNAL):].lstrip("/"))
    if url.startswith("journal://"):
        return Path(url[len("journal://"):])
    return None


def open_storage(url: str) -> BaseStorage:
    path = _file_of(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal://"):
        # The open() lock works on NFS, where the default symlink lock may not.
        try:
            return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # JSONDecodeError and UnicodeDecodeError too
            raise ConfigError(f"hydra.sweeper.storage '{_redact(url)}': '{path}' is not an Optuna journal file "
                              f"({type(err).__name__}: {str(err)[:120]}); move it away or name another file") from None
    url = _with_driver(url)
    try:
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
    except ModuleNotFoundError as err:
        raise EnvironmentProblem(f"hydra.sweeper.storage '{_redact(url)}' needs the database driver '{err.name}': "
                                 f"pip install 'physiotouch[postgres]'") from None
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's errors: bad URL, server down, wrong password
        raise ConfigError(f"hydra.sweeper.storage '{_redact(url)}' cannot be opened: "
                          f"{str(err).splitlines()[0][:300]}") from None


def _redact(url: str) -> str:
    """A URL without its password, for messages and logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


@contextmanager
def claim_lock(url: str, study_name: str) -> Iterator[None]:
    path = _file_of(url)
    if path is not None:
        with FolderLock(path.with_name(path.name + ".claim.lock"), "study", wait=True):
            yield
        return
    if not url.startswith("postgresql"):
        raise ConfigError(f"hydra.sweeper.storage '{_redact(url)}': shared studies work on sqlite, journal or "
                          f"postgresql storage")
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
    engine = sqlalchemy.create_engine(_with_driver(url), poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as con:  # the lock belongs to this session and ends with it, even if we are killed
        con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    engine.dispose()


def beat(trial: optuna.trial.Trial) -> None:
    trial.set_user_attr(HEARTBEAT_ATTR, time.time())


def is_stale(trial: optuna.trial.FrozenTrial, grace_seconds: float) -> bool:
    """A RUNNING trial whose sweeper has not beaten for `grace_seconds` belongs to a killed sweep."""
    last = trial.user_attrs.get(HEARTBEAT_ATTR)
    if last is None and trial.datetime_start is not None:
        last = trial.datetime_start.timestamp()
    return last is not None and time.time() - float(last) > grace_seconds


def trial_by_number(study: optuna.Study, storage: BaseStorage, number: int) -> optuna.trial.Trial:
    """A handle on trial `number` of `study` from any process (the public storage calls; Optuna hands out
    Trial objects only from ask())."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))
