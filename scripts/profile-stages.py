#!/usr/bin/env python3
"""Splits the samples of `perf script` output (recorded with --call-graph) into the worker's
stages, and again by library, and prints two Markdown tables: share of the samples and µs per
event.

    scripts/profile-stages.py SCRIPT.txt [US_PER_EVENT]

A sample belongs to the FIRST stage whose test matches its thread name or one of its frames,
in the order below: compaction runs on the runtime's threads too, so it is tested before the
stages it shares frames with (Parquet writing). Called by scripts/profile.
"""
import collections
import re
import sys


def samples(path):
    """(thread name, [frames, innermost first]) per sample, symbol offsets and DSOs cut."""
    out, cur = [], None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur:
                    out.append(cur)
                cur = None
            elif not line.startswith((" ", "\t")):
                cur = (line.split()[0], [])
            elif cur is not None:
                parts = line.strip().split(None, 1)
                cur[1].append(re.sub(r"\+0x[0-9a-f]+.*$", "", parts[1] if len(parts) > 1 else "?"))
    if cur:
        out.append(cur)
    return out


def frame(pattern):
    """A test: one of the sample's frames matches `pattern`."""
    r = re.compile(pattern)
    return lambda thread, frames: any(r.search(x) for x in frames)


def thread(test):
    """A test on the sample's thread name."""
    return lambda name, frames: test(name)


def either(*tests):
    """A test that passes when one of `tests` does."""
    return lambda name, frames: any(t(name, frames) for t in tests)


STAGES = [
    ("compaction (read + rewrite, zstd)", frame(r"CompactionJob::run|tables::compact::")),
    ("Kafka consumer (librdkafka threads, poll and copy thread)",
     thread(lambda name: name.startswith("rdk:") or name == "kafka-poll")),
    ("Avro decoding into Arrow", frame(r"Decoder::decode")),
    ("Parquet writing of fresh files (snappy)", frame(r"tables::files::write|upload_parquet_file|PartitionWriter")),
    ("deletion vectors", frame(r"tables::dv|roaring")),
    ("resolve, plan, key index, recent rows", frame(r"tables::(resolve|plan|index|recent|keys)")),
    ("commit and log (delta-rs)", frame(r"tables::(commit|log|lake|txns|offsets)|deltalake|delta_kernel")),
    ("pipeline glue (cormorant::pipeline)", frame(r"cormorant::pipeline")),
]
OTHER = "other (allocator, runtime, kernel)"

# whose code a sample is in: a frame of the library, or a thread of its own (librdkafka's)
LIBRARIES = [
    ("librdkafka", either(thread(lambda name: name.startswith("rdk:")), frame(r"^(rd_kafka|rd_|LZ4)"))),
    ("parquet-rs + snappy/zstd", frame(r"^(parquet::|<parquet)|snap::|ZSTD|^zstd")),
    ("arrow-rs kernels", frame(r"^(arrow_|<arrow)")),
]
REST = "the rest (Cormorant, tokio, delta-rs, allocator, kernel)"


def table(title, all_samples, groups, other, us):
    """Prints one Markdown table: each sample counted in the first group that matches."""
    counts = collections.Counter()
    for name, frames in all_samples:
        counts[next((g for g, test in groups if test(name, frames)), other)] += 1
    n = max(len(all_samples), 1)
    print(f"| {title} | share of samples |" + (" µs per event |" if us else ""))
    print("|---|---|" + ("---|" if us else ""))
    for name in [g for g, _ in groups] + [other]:
        share = counts[name] / n
        print(f"| {name} | {100 * share:.0f}% |" + (f" {us * share:.2f} |" if us else ""))


def main():
    all_samples = samples(sys.argv[1])
    us = float(sys.argv[2]) if len(sys.argv) > 2 else None
    table("stage", all_samples, STAGES, OTHER, us)
    print()
    table("library", all_samples, LIBRARIES, REST, us)
    print(f"{len(all_samples)} samples" + (f", {us:.2f} µs of CPU per event in all" if us else ""))


if __name__ == "__main__":
    main()
