"""lm-eval task configs for the paper's seven zero-shot tasks, read from local files (offline).

One YAML per task (`paser_<task>`, so the names never clash with lm-eval's stock tasks) keeps the stock task's
prompt, choices and metrics; `utils.py` holds the loaders the YAMLs name as `custom_dataset`. Load them with
`TaskManager(include_path=TASKS_DIR, include_defaults=False, metadata={"data_dir": ...})`.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
LOCAL_TASK_PREFIX = "paser_"
