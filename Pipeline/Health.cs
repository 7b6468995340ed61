namespace PromoStream;

/// <summary>An answer of /healthz or /readyz: 200 or 503, and a line saying why.</summary>
internal sealed record HealthAnswer(bool Ok, string Text);

/// <summary>
/// Liveness and readiness of a running processor. Alive: the loop turned (an idle loop turns every 200 ms) or a held
/// batch was retried within metrics.stuck_after_seconds. Ready: partitions assigned, PostgreSQL and Kafka answering
/// the background probes, and no batch held longer than metrics.ready_max_hold_seconds.
/// </summary>
internal sealed class Health(Settings settings, PipelineMetrics metrics, CancellationToken stopping)
{
    private readonly MetricsSettings _limits = settings.Metrics;

    public HealthAnswer Liveness()
    {
        var idle = metrics.SinceActivity.TotalSeconds;
        return idle <= _limits.StuckAfterSeconds
            ? new(true, $"alive: the loop turned {idle:0.0}s ago")
            : new(false, $"stuck: the loop has not turned for {idle:0}s (metrics.stuck_after_seconds: {_limits.StuckAfterSeconds})");
    }

    public HealthAnswer Readiness()
    {
        var failing = new List<string>();
        if (stopping.IsCancellationRequested) failing.Add("stopping");
        var partitions = metrics.OwnedPartitions().Count;
        if (partitions == 0) failing.Add("no input partitions assigned");
        if (metrics.Postgres is { Reachable: false } postgres)
            failing.Add($"PostgreSQL at {settings.Postgres.Describe()} unreachable for {postgres.DownFor.TotalSeconds:0.0}s ({postgres.LastError})");
        if (metrics.Lag is { Reachable: false } lag)
            failing.Add($"Kafka at {settings.Kafka.BootstrapServers} unreachable ({lag.LastError})");
        var hold = metrics.LongestHold.TotalSeconds;
        if (hold > _limits.ReadyMaxHoldSeconds)
            failing.Add($"a batch held for {hold:0}s (metrics.ready_max_hold_seconds: {_limits.ReadyMaxHoldSeconds})");
        return failing.Count == 0
            ? new(true, $"ready: {partitions} partitions assigned, PostgreSQL and Kafka reachable, no batch held")
            : new(false, "not ready: " + string.Join("; ", failing));
    }
}
