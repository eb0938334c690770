"""Unit tests (no services): the consumer's Prometheus metrics."""

from __future__ import annotations

from consumer.metrics import Metrics
from consumer.records import Position

POS = Position("p.recommend_log", 0, 7)


def test_metrics_render_prometheus_text_with_histograms_and_process_metrics():
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()
    m.inc("sentencify_consumer_records_total", 3, topic="t", outcome="stored")
    m.set("sentencify_consumer_lag_records", 5, topic="t", partition=0)
    m.observe("sentencify_consumer_write_duration_seconds", 0.02, collection="c")
    m.observe("sentencify_consumer_record_age_seconds", 3.0, topic="t")
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert families["sentencify_consumer_records"].type == "counter"
    assert families["sentencify_consumer_write_duration_seconds"].type == "histogram"
    assert families["sentencify_consumer_record_age_seconds"].type == "histogram"
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info"} <= set(families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("sentencify_consumer_records_total", (("outcome", "stored"), ("topic", "t")))] == 3
    assert samples[("sentencify_consumer_lag_records", (("partition", "0"), ("topic", "t")))] == 5.0
    assert samples[("sentencify_consumer_record_age_seconds_bucket", (("le", "5.0"), ("topic", "t")))] == 1
    assert (
        m.sum_where("sentencify_consumer_records_total", outcome="stored") == 3
        and m.total("sentencify_consumer_lag_records") == 5
    )
    for name in __import__("consumer.metrics", fromlist=["SPECS"]).SPECS:
        assert name.endswith(("_total", "_seconds", "_bytes", "_records", "_ratio", "_alarm", "_paused", "_partitions")), name
