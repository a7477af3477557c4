"""How the knowledge cloud lives in MLflow: every experiment, tag, param, metric and artifact name, nowhere else.

See ``docs/cloud-schema.md`` for the page people read. In short:

* experiment ``tfp-cloud`` holds one **spec run** (the cloud's fingerprint spec), one **task run** per task and
  any number of **knowledge runs** (one measured result each), told apart by the tag ``tfp.kind``;
* experiment ``tfp-recommendations`` holds one run per recommendation (ranking plot and JSON);
* experiment ``tfp-training`` holds one run per ``tfp train`` (params, per-epoch metrics, figures, the model);
  its outcome reaches the cloud as a knowledge run whose ``tfp.evidence_run`` names it;
* experiment ``tfp-tuning`` holds one run per ``tfp tune`` study with its trials as nested training runs.

A run becomes visible to queries only when its tag ``tfp.complete`` is ``"1"``, written last, after every
artifact; an interrupted contribution therefore never shows up. MLflow caps tags at 8,000 characters and params at
6,000, so arrays (fingerprints, policies) are artifacts.
"""
from __future__ import annotations

__all__ = ["ARTIFACT_LIMITS", "artifact_limit", "CLOUD_EXPERIMENT", "RECOMMENDATION_EXPERIMENT",
           "EVALUATION_EXPERIMENT", "TRAINING_EXPERIMENT",
           "TUNING_EXPERIMENT", "STUDIES_EXPERIMENT", "TFP_EXPERIMENTS", "Tag",
           "Kind", "KnowledgeKind", "Artifact", "Metric", "Param", "complete_filter", "KNOWLEDGE_KINDS",
           "BASE_METRICS", "PARAM_LIMIT", "TAG_LIMIT", "sha256_tag"]

CLOUD_EXPERIMENT = "tfp-cloud"
RECOMMENDATION_EXPERIMENT = "tfp-recommendations"
EVALUATION_EXPERIMENT = "tfp-evaluations"
TRAINING_EXPERIMENT = "tfp-training"
TUNING_EXPERIMENT = "tfp-tuning"
#: Optuna studies kept in the cloud (``tfp tune --storage mlflow``): a study is a run, each trial a child run.
STUDIES_EXPERIMENT = "tfp-studies"
MODEL_RANKING_EXPERIMENT = "tfp-model-rankings"
#: Every experiment tfp writes, which ``tfp cloud init`` creates (behind tfp-basic-auth only an admin may).
TFP_EXPERIMENTS = (CLOUD_EXPERIMENT, RECOMMENDATION_EXPERIMENT, EVALUATION_EXPERIMENT, TRAINING_EXPERIMENT,
                   TUNING_EXPERIMENT, STUDIES_EXPERIMENT, MODEL_RANKING_EXPERIMENT)


class Tag:
    """Run tags (namespaced ``tfp.``); experiment tags are marked."""

    KIND = "tfp.kind"                    # spec | task | knowledge
    COMPLETE = "tfp.complete"            # "1" once every artifact is written (written last)
    SPEC_ID = "tfp.spec_id"              # also an experiment tag: the cloud's spec
    OWNER = "tfp.owner"                  # experiment tag: who set the spec; snapshots are read from it alone
    TASKS_VERSION = "tfp.tasks_version"  # experiment tag: a new random value after every change to the tasks
    TFP_VERSION = "tfp.version"
    # MLflow's own system tags that tfp writes or checks
    MLFLOW_USER = "mlflow.user"          # the account that created the run (the server sets it behind basic auth)
    MLFLOW_PARENT_RUN = "mlflow.parentRunId"
    TASK = "tfp.task"                    # task name (task and knowledge runs)
    KEYWORDS = "tfp.keywords"            # comma-separated
    DOMAIN = "tfp.domain"
    SHAREABLE = "tfp.shareable"          # "true" | "false"
    DATA_URI = "tfp.data_uri"            # where the task's data lives (only meaningful when shareable)
    CONTRIBUTOR = "tfp.contributor"
    MEASURED_BY = "tfp.measured_by"      # task runs: other accounts whose outcomes and baselines on it count
    FINGERPRINT_SHA256 = "tfp.fingerprint_sha256"   # "" for tasks known only by description
    KNOWLEDGE = "tfp.knowledge"          # a KnowledgeKind
    KNOWLEDGE_KEY = "tfp.knowledge_key"  # content hash: re-contributing the same result is a no-op
    ARCHITECTURE = "tfp.architecture"    # timm name ("" when the source did not publish it)
    SOURCE = "tfp.source"                # source task of a transfer outcome
    POLICY_ID = "tfp.policy_id"
    EVIDENCE_RUN = "tfp.evidence_run"    # the run that produced the result, when known
    PROVENANCE = "tfp.provenance"        # e.g. "Godau et al. 2024 (MIT), repetition 0"
    REPETITION = "tfp.repetition"
    SCENARIO = "tfp.scenario"            # training runs: baseline | architecture | augmentation | ...
    KNOWLEDGE_RUNS = "tfp.knowledge_runs"  # training runs: the knowledge runs their outcome became
    FAILED = "tfp.failed"                # why a run ended FAILED when another process ended it
    PRUNED = "tfp.pruned"                # "1" on a trial's run that Optuna pruned
    STUDY = "tfp.study"                  # study runs: the Optuna study's name
    BEST_PREFIX = "tfp.best."            # study runs: the best trial's parameters, one tag each
    TARGET = "tfp.target"                # recommendation runs: the target's name
    SELECTOR = "tfp.selector"            # recommendation runs
    REFERENCE = "tfp.reference"          # evaluation runs: what was evaluated
    ORDERED_BY = "tfp.ordered_by"        # model-ranking runs: the score that ordered them
    SHA256_PREFIX = "tfp.sha256/"        # + artifact path: the SHA-256 of every file tfp logged (see sha256_tag)
    SNAPSHOT_TASKS = "tfp.snapshot_tasks"  # snapshot runs: how many fingerprints they hold
    HEARTBEAT = "tfp.heartbeat"          # trial runs of tfp-studies: the worker's last beat (Unix seconds)
    WORKERS = "tfp.workers"              # study runs of tfp-studies: accounts the owner named to run its trials
    PROJECT_RUN = "tfp.project_run"      # the `mlflow run` entry point's run that created this run
    CREATED_PREFIX = "tfp.created."      # + run id, on an `mlflow run` entry point's run: the tfp runs it created


class Kind:
    SPEC = "spec"
    TASK = "task"
    KNOWLEDGE = "knowledge"
    RECOMMENDATION = "recommendation"
    EVALUATION = "evaluation"
    TRAINING = "training"
    STUDY = "study"
    MODEL_RANKING = "model_ranking"
    SNAPSHOT = "snapshot"                # every fingerprint in one file, for a new client's first query
    OPTUNA_STUDY = "optuna_study"        # a study of the cloud's own Optuna storage (tfp-studies)
    OPTUNA_TRIAL = "optuna_trial"        # one of its trials


class KnowledgeKind:
    """What one knowledge run records."""

    ARCHITECTURE = "architecture"        # the task trained with architecture A: metrics
    POLICY = "policy"                    # the task's learned augmentation policy (artifact)
    BASELINE = "baseline"                # the task trained without transfer: metrics
    AUGMENTATION = "augmentation"        # the task trained with the policy of source S: metrics
    PRETRAINING = "pretraining"          # the task fine-tuned after pretraining on source S: metrics
    COTRAINING = "cotraining"            # the task co-trained with source S: metrics
    ARCHITECTURE_TRANSFER = "architecture_transfer"  # the task trained with source S's best architecture


KNOWLEDGE_KINDS = (KnowledgeKind.ARCHITECTURE, KnowledgeKind.POLICY, KnowledgeKind.BASELINE,
                   KnowledgeKind.AUGMENTATION, KnowledgeKind.PRETRAINING, KnowledgeKind.COTRAINING,
                   KnowledgeKind.ARCHITECTURE_TRANSFER)
#: Knowledge about a task that only its owner's say makes evidence (docs/server.md, "Who may say what").
OUTCOME_KINDS = frozenset({KnowledgeKind.BASELINE, KnowledgeKind.AUGMENTATION, KnowledgeKind.PRETRAINING,
                           KnowledgeKind.COTRAINING, KnowledgeKind.ARCHITECTURE_TRANSFER})
#: Outcome and baseline rows one account may write about one target (a seed over 10,000 sources, two
#: repetitions), and rows of its outcome tables that readers count in all (the newest tables first).
MAX_ROWS_PER_TARGET = 20_000
MAX_ROWS_PER_ACCOUNT = 200_000


class Param:
    """Run params. Task runs: the first four; the others name what a recommendation, knowledge, study, evaluation
    or model-ranking run was asked (a training run's params are its :meth:`TrainConfig.params`)."""

    NUM_IMAGES = "num_images"
    NUM_CLASSES = "num_classes"
    NUM_DRAWS = "num_draws"
    INTRINSIC_DIM = "intrinsic_dim"
    ROWS = "rows"                # knowledge runs: rows in the record
    SELECTOR = "selector"
    SELECTORS = "selectors"      # evaluation runs
    TOP_K = "top_k"
    METRIC = "metric"
    TARGET = "target"
    STUDY = "study"              # study runs: the Optuna study's name
    SPACE = "space"              # study runs: the search space (JSON)
    LR_FOUND = "lr_found"        # training runs: Lightning's learning-rate finder's suggestion
    # Trial runs of tfp-studies: MLflow params are write-once, so the first worker to write one owns the step.
    CLAIMED_BY = "tfp.claimed_by"    # the worker that took a waiting trial
    FINISHED_BY = "tfp.finished_by"  # the worker that finished (or failed) it


class Metric:
    """Metric names (and the base metrics a recommendation or an evaluation can rank by)."""

    BALANCED_ACCURACY = "balanced_accuracy"
    AUROC = "auroc"
    BEST_BALANCED_ACCURACY = "best_balanced_accuracy"   # knowledge and study runs
    BEST_DISTANCE = "best_distance"                     # recommendation runs
    BEST_EPOCH = "best_epoch"                           # training runs
    IMAGES_PER_SECOND = "images_per_second"             # training runs
    TRIALS = "trials"                                   # study runs


#: The base metrics of outcomes (docs/method.md §6).
BASE_METRICS = (Metric.BALANCED_ACCURACY, Metric.AUROC)
#: MLflow's caps: a param value, a tag value.
PARAM_LIMIT = 6000
TAG_LIMIT = 8000


class Artifact:
    SPEC = "spec/spec.npz"
    FINGERPRINT = "fingerprint/fingerprint.npz"
    POLICY = "policy/policy.json"
    RECOMMENDATION = "recommendation.json"
    RANKING_PLOT = "ranking.png"
    TRAINING_POLICY = "policy.json"              # the policy a training run applied
    CONFUSION_MATRIX = "confusion_matrix.png"
    LEARNING_CURVES = "learning_curves.png"
    TRAINING_RESULT = "result.json"
    MODEL = "model"                              # MLflow pytorch flavour (pt2: torch.export, no pickle)
    SNAPSHOT = "snapshot/fingerprints.zip"       # snapshot runs: members named <sha256>.npz
    STUDY = "study.json"                         # study runs: every trial (params, state, value, attrs)


def sha256_tag(artifact_path: str) -> str:
    """The tag that records an artifact's SHA-256, written when the file is logged and checked on every download
    (``tfp.sha256/knowledge/architecture.json``). MLflow tag keys allow letters, digits and ``_-. /``; ``_``, ``:``
    and ``+`` of policy ids are escaped reversibly."""
    escaped = artifact_path.replace("_", "__").replace(":", "_c").replace("+", "_p")
    return Tag.SHA256_PREFIX + escaped


def complete_filter(kind: str, **tags: str) -> str:
    """MLflow filter string for complete runs of ``kind`` with the given ``tfp.`` tags (keys without prefix)."""
    clauses = [f"tags.`{Tag.KIND}` = '{kind}'", f"tags.`{Tag.COMPLETE}` = '1'"]
    for key, value in tags.items():
        clauses.append(f"tags.`tfp.{key}` = '{_quote(value)}'")
    return " and ".join(clauses)


def _quote(value: str) -> str:
    return str(value).replace("'", "\\'")


#: The largest stored size of a conforming artifact of each kind (bytes): a fingerprint of 4,096 features x
#: (100 + 1,000) bins of uint32 counts is 18 MB uncompressed; a spec of 4,096 features' edges under 1 MB; a
#: knowledge table of 10,000 rows about 2.5 MB; a policy a few kB. Anything larger is refused before download.
ARTIFACT_LIMITS = {Artifact.FINGERPRINT: 64 * 2**20, Artifact.SPEC: 8 * 2**20, "knowledge/": 4 * 2**20,
                   "policy/": 2**20, Artifact.STUDY: 4 * 2**20}


def artifact_limit(artifact_path: str) -> int | None:
    """The size limit of an artifact path (``None``: unbounded, the snapshot, whose members are bounded)."""
    for prefix, limit in ARTIFACT_LIMITS.items():
        if artifact_path == prefix or (prefix.endswith("/") and artifact_path.startswith(prefix)):
            return limit
    return None
