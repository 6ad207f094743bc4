"""The benchmark's bookkeeping (no timing here: timings live in benchmarks/results)."""

from benchmarks.serve_bench import markdown, summarise


def test_summarise_percentiles_and_throughput():
    row = summarise([i / 1000 for i in range(1, 101)], errors=2, elapsed=2.0, images=100)
    assert row["throughput"] == 50.0 and row["requests"] == 100 and row["errors"] == 2
    assert row["p50_ms"] == 51.0 and row["p99_ms"] == 100.0 and row["p95_ms"] == 96.0


def test_markdown_reports_the_target_ratios():
    runs = [
        {
            "system": s,
            "size": 28,
            "concurrency": 32,
            "throughput": t,
            "p50_ms": 10.0,
            "p95_ms": 20.0,
            "p99_ms": 25.0,
            "errors": 0,
        }
        for s, t in (("in_process", 200.0), ("purifier", 180.0), ("litserve", 120.0))
    ]
    text = markdown(
        {
            "command": "x",
            "device": "cpu",
            "model": "m",
            "threads": 2,
            "max_batch_size": 16,
            "max_queue_delay_ms": 4.0,
            "runs": runs,
        }
    )
    assert "purifier / ceiling = 0.90" in text and "purifier / litserve = 1.50" in text
    assert "purifier p99 / p50 = 2.50" in text
