"""Our own metrics, exported through ``ray.util.metrics`` for the Ray dashboard and Prometheus.

Names are prefixed ``raydqn_``; Ray adds its own ``ray_`` prefix on export, so the
dashboard's metrics view and Grafana list them as ``ray_raydqn_...``.
"""

from __future__ import annotations

import math

from ray.util.metrics import Gauge

from learner.metrics import METRICS

#: metrics.csv column -> (gauge name, description), for the columns ``learner.metrics`` marks as gauges.
DRIVER_GAUGES = {m.name: (m.gauge_name, m.meaning) for m in METRICS if m.gauge}


class DriverMetrics:
    """Gauges of the learner process, tagged with the run name."""

    def __init__(self, run: str):
        self.gauges = {}
        for column, (name, desc) in DRIVER_GAUGES.items():
            g = Gauge(name, description=desc, tag_keys=("run",))
            g.set_default_tags({"run": run})
            self.gauges[column] = g

    def update(self, row: dict) -> None:
        for column, gauge in self.gauges.items():
            value = row.get(column)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                gauge.set(float(value))
