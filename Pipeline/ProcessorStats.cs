namespace PromoStream;

/// <summary>What one committed batch did: events by outcome, notifications sent, rows inserted.</summary>
/// <param name="DeadLetterReasons">Each dead letter's <see cref="DeadLetter.MetricReason"/>.</param>
internal sealed record CountsOfBatch(long Notified, long Replayed, long Duplicates, long Inactive, long NoSubscribers, long DeadLetters,
    long Notifications, List<long> OutputTimestampsMs, IReadOnlyList<string> DeadLetterReasons);

/// <summary>Counters for the stats line and the metrics, and the end-to-end latency of committed output.</summary>
internal sealed class ProcessorStats
{
    public ProcessorStats() => Metrics = new PipelineMetrics(this);

    /// <summary>The same counts, and more, as .NET metrics (Meter "PromoStream").</summary>
    public PipelineMetrics Metrics { get; }

    // One bucket per millisecond up to a minute: exact percentiles in fixed memory however long the stream.
    private readonly long[] _latencyMs = new long[60_001];
    private readonly System.Diagnostics.Stopwatch _sinceStart = System.Diagnostics.Stopwatch.StartNew();

    public long Consumed, Notified, Invalid, Inactive, Duplicates, Replayed, NoSubscribers, Notifications, Rows, Transactions, Aborts;
    public double LastBatchMs;
    public TimeSpan? FirstInputAt, LastCommitAt;

    public void Committed(int consumed, CountsOfBatch c, long rowsInserted, TimeSpan batchTime, long committedAtMs)
    {
        var now = _sinceStart.Elapsed;
        FirstInputAt ??= now - batchTime;
        LastCommitAt = now;
        Consumed += consumed; Notified += c.Notified; Invalid += c.DeadLetters; Inactive += c.Inactive; Duplicates += c.Duplicates; Replayed += c.Replayed;
        NoSubscribers += c.NoSubscribers; Notifications += c.Notifications; Rows = rowsInserted;
        Transactions++;
        LastBatchMs = batchTime.TotalMilliseconds;
        foreach (var t in c.OutputTimestampsMs) _latencyMs[Math.Clamp(committedAtMs - t, 0, _latencyMs.Length - 1)]++;
        Metrics.Committed(c, committedAtMs);
    }

    public void Aborted() => Interlocked.Increment(ref Aborts);

    public long LatencyPercentileMs(double p)
    {
        var total = _latencyMs.Sum();
        if (total == 0) return 0;
        var rank = (long)Math.Ceiling(p / 100 * total);
        long seen = 0;
        for (var ms = 0; ms < _latencyMs.Length; ms++)
            if ((seen += _latencyMs[ms]) >= rank) return ms;
        return _latencyMs.Length - 1;
    }

    public static long PeakRssMb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024;
        return 0;
    }

    public string Line() =>
        $"stats consumed={Consumed} invalid={Invalid} inactive={Inactive} duplicate={Duplicates} replayed={Replayed} no_subscribers={NoSubscribers} " +
        $"notifications={Notifications} rows_written={Rows} transactions={Transactions} aborts={Aborts}";

    /// <summary>The stats line's counters as numbers, for the json log format.</summary>
    public (string Name, object? Value)[] Fields() =>
    [
        ("component", "processor"), ("consumed", Consumed), ("invalid", Invalid), ("inactive", Inactive), ("duplicate", Duplicates),
        ("replayed", Replayed), ("no_subscribers", NoSubscribers), ("notifications", Notifications), ("rows_written", Rows),
        ("transactions", Transactions), ("aborts", Aborts),
    ];

    /// <summary>The one line scripts and the benchmark parse when the processor exits.</summary>
    public string FinalLine()
    {
        var busy = (LastCommitAt ?? TimeSpan.Zero) - (FirstInputAt ?? TimeSpan.Zero);
        return $"final consumed={Consumed} invalid={Invalid} inactive={Inactive} duplicate={Duplicates} replayed={Replayed} no_subscribers={NoSubscribers} " +
               $"notifications={Notifications} rows_written={Rows} transactions={Transactions} aborts={Aborts} " +
               $"busy_s={busy.TotalSeconds:0.000} p50_ms={LatencyPercentileMs(50)} p99_ms={LatencyPercentileMs(99)} peak_rss_mb={PeakRssMb()}";
    }
}
