"""The merge's one Logger and one Metrics (namespace from POWERTOOLS_METRICS_NAMESPACE)."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

from shared.deployment_facts import MERGE, SERVICE_NAME_VARIABLE
from shared.naming import METRICS_NAMESPACE

logger = Logger(service=os.environ.get(SERVICE_NAME_VARIABLE) or MERGE.service)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or METRICS_NAMESPACE)
