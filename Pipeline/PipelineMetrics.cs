using System.Diagnostics;
using System.Diagnostics.Metrics;
using Confluent.Kafka;

namespace PromoStream;

/// <summary>
/// The processor's instruments, on the .NET Meter "PromoStream": dotnet-counters, OpenTelemetry and the /metrics
/// endpoint (MetricsEndpoint.cs) all read the same ones. prometheus-net names an instrument "{meter}_{instrument}" in
/// lower case and adds no suffix or unit, so the instrument names below are the exported names without the prefix.
/// Counts are observable instruments over running totals: a scrape always reads the whole total, so a series that
/// prometheus-net drops while idle comes back with its right value. docs/ops-metrics.md explains every one.
/// </summary>
internal sealed class PipelineMetrics : IDisposable
{
    public const string MeterName = "PromoStream";

    public readonly Meter Meter = new(MeterName);
    private readonly ProcessorStats _stats;
    private readonly Histogram<double> _latency;
    private readonly Histogram<double> _phases;
    private readonly object _gate = new();
    // Zeros from the start, so that an alert on a rate finds its series before the first occurrence.
    private readonly Dictionary<string, long> _deadLetters = new() { ["invalid"] = 0 };
    private readonly Dictionary<string, long> _rebalances = new() { ["assigned"] = 0, ["revoked"] = 0 };
    private readonly Dictionary<FailureClass, long> _retries = new() { [FailureClass.Transient] = 0, [FailureClass.PermanentForEvent] = 0 };
    private readonly Dictionary<string, long> _holdStarted = []; // where → Stopwatch timestamp of its first failure
    private double _heldSeconds;
    private readonly HashSet<TopicPartition> _owned = [];
    private long _lastActivity = Stopwatch.GetTimestamp();

    private ConsumerLag? _lag;
    private PostgresProbe? _postgres;
    private SubscriberDirectory? _subscribers;
    private CampaignLedger? _ledger;

    public PipelineMetrics(ProcessorStats stats)
    {
        _stats = stats;
        Meter.CreateObservableCounter("events_total", EventsByOutcome, description:
            "Input events by outcome: notified (first sighting), replayed (sent again after a failed Kafka transaction), duplicate, expired (not active now), dead_lettered (with reason)");
        Meter.CreateObservableCounter("notifications_total", () => new[]
        {
            Measure(_ledger?.RowsInserted ?? 0, ("sink", "postgres")),
            Measure(_stats.Notifications, ("sink", "kafka")),
        }, description: "Notifications written: sink=postgres rows inserted and committed, sink=kafka records committed");
        Meter.CreateObservableCounter("campaigns_without_subscribers_total", () => _stats.NoSubscribers,
            description: "Notified or replayed campaigns whose restaurant had no subscriber");
        Meter.CreateObservableCounter("transactions_total", () => _stats.Transactions, description: "Batches committed to Kafka");
        Meter.CreateObservableCounter("transaction_aborts_total", () => Interlocked.Read(ref _stats.Aborts),
            description: "Kafka transactions aborted or given up; their batches are read again");
        Meter.CreateObservableCounter("rebalances_total", () => Snapshot(_rebalances, kind => ("kind", kind)),
            description: "Partition assignments and revocations this instance went through");
        Meter.CreateObservableCounter("retries_total", () => Snapshot(_retries, c => ("class", ClassName(c))),
            description: "Database operations tried again, by failure class: transient (held, retried with back-off), permanent_for_event (bisected)");
        Meter.CreateObservableCounter("held_seconds_total", () => Measure(HeldSecondsTotal(), ("class", ClassName(FailureClass.Transient))),
            unit: "s", description: "Time batches spent held by a failure class, the current hold included");
        Meter.CreateObservableGauge("hold_age_seconds", () => LongestHold.TotalSeconds, unit: "s",
            description: "How long the batch held now has been held (0: none)");
        Meter.CreateObservableGauge("consumer_lag", ConsumerLagByPartition,
            description: "Input records waiting per partition this instance owns: the read_committed end offset minus the committed position");
        Meter.CreateObservableGauge("assigned_partitions", () => OwnedPartitions().Count, description: "Input partitions this instance owns");
        Meter.CreateObservableGauge("kafka_up", () => _lag?.Reachable == true ? 1 : 0,
            description: "1 while the background lag query reaches Kafka");
        Meter.CreateObservableGauge("postgres_up", () => _postgres?.Reachable == true ? 1 : 0,
            description: "1 while the background probe (SELECT 1 every 2 s) reaches PostgreSQL");
        Meter.CreateObservableGauge("ledger_campaigns", () => _postgres?.LedgerCampaigns ?? 0,
            description: "Rows in promostream_ledger (the planner's estimate for a large table, counted for a small one; refreshed every 5 s)");
        Meter.CreateObservableGauge("subscriber_cache_age_seconds", () => _subscribers?.OldestUsedAgeSeconds ?? 0, unit: "s",
            description: "Age of the oldest subscriber list the latest batch used (at most processing.subscribers_refresh_seconds)");
        Meter.CreateObservableGauge("subscriber_cache_restaurants", () => _subscribers?.CachedRestaurants ?? 0,
            description: "Restaurants whose subscriber lists are cached");
        Meter.CreateObservableGauge("loop_idle_seconds", () => SinceActivity.TotalSeconds, unit: "s",
            description: "Time since the loop last turned or a held batch was last retried (/healthz fails past metrics.stuck_after_seconds)");
        _latency = Meter.CreateHistogram<double>("end_to_end_latency_seconds", unit: "s",
            description: "From an event's Kafka timestamp to the Kafka commit of its notifications (events that gave notifications)");
        _phases = Meter.CreateHistogram<double>("batch_phase_seconds", unit: "s",
            description: "Time per batch in each phase: evaluate (parse, activity, subscribers), ledger_write (PostgreSQL transaction, holds included), kafka_transaction (produce, offsets, commit)");
    }

    public static readonly double[] LatencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
    public static readonly double[] PhaseBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    /// <summary>
    /// Starts the background measurements (consumer lag, PostgreSQL probe) and says where the other gauges read from;
    /// the processor calls it once it has them. They stop when this is disposed.
    /// </summary>
    public void Watch(Settings settings, CommittedPositions committed, CampaignLedger ledger, SubscriberDirectory subscribers)
    {
        _lag = new ConsumerLag(settings.Kafka, OwnedPartitions, committed, () => ledger.RecordedPositions(settings.Kafka.InputTopic));
        _postgres = new PostgresProbe(settings.Postgres.ConnectionString);
        (_subscribers, _ledger) = (subscribers, ledger);
        ledger.Metrics = this;
    }

    public ConsumerLag? Lag => _lag;
    public PostgresProbe? Postgres => _postgres;

    // ---- from ProcessorStats.Committed: one call per committed batch

    public void Committed(CountsOfBatch counts, long committedAtMs)
    {
        lock (_gate)
            foreach (var reason in counts.DeadLetterReasons) _deadLetters[reason] = _deadLetters.GetValueOrDefault(reason) + 1;
        foreach (var t in counts.OutputTimestampsMs) _latency.Record(Math.Max(0, committedAtMs - t) / 1000.0);
    }

    // ---- from the loop

    public T Timed<T>(string phase, Func<T> work)
    {
        var start = Stopwatch.GetTimestamp();
        var result = work();
        PhaseTook(phase, Stopwatch.GetElapsedTime(start));
        return result;
    }

    public void PhaseTook(string phase, TimeSpan elapsed) =>
        _phases.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("phase", phase));

    /// <summary>The loop turned: /healthz counts it as progress (an idle loop turns every 200 ms).</summary>
    public void LoopTurned() => Volatile.Write(ref _lastActivity, Stopwatch.GetTimestamp());

    public TimeSpan SinceActivity => Stopwatch.GetElapsedTime(Volatile.Read(ref _lastActivity));

    public void Assigned(IEnumerable<TopicPartition> partitions)
    {
        lock (_gate)
        {
            _owned.UnionWith(partitions);
            _rebalances["assigned"] = _rebalances.GetValueOrDefault("assigned") + 1;
        }
    }

    public void Revoked(IEnumerable<TopicPartition> partitions)
    {
        lock (_gate)
        {
            _owned.ExceptWith(partitions);
            _rebalances["revoked"] = _rebalances.GetValueOrDefault("revoked") + 1;
        }
    }

    public List<TopicPartition> OwnedPartitions()
    {
        lock (_gate) return [.. _owned];
    }

    // ---- holds: a batch waiting out a failure at `where` (evaluate, ledger)

    /// <summary>An operation failed and will be tried again; a transient failure holds the batch from its first one on.</summary>
    public void Retrying(FailureClass failure, string where)
    {
        LoopTurned(); // a held batch retried is the loop waiting on purpose, not stuck
        lock (_gate)
        {
            _retries[failure] = _retries.GetValueOrDefault(failure) + 1;
            if (failure == FailureClass.Transient) _holdStarted.TryAdd(where, Stopwatch.GetTimestamp());
        }
    }

    /// <summary>The operation at `where` went through: its hold, if any, ends.</summary>
    public void Resumed(string where)
    {
        lock (_gate)
            if (_holdStarted.Remove(where, out var started)) _heldSeconds += Stopwatch.GetElapsedTime(started).TotalSeconds;
    }

    public TimeSpan LongestHold
    {
        get
        {
            lock (_gate) return _holdStarted.Count == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(_holdStarted.Values.Min());
        }
    }

    private double HeldSecondsTotal()
    {
        lock (_gate) return _heldSeconds + _holdStarted.Values.Sum(s => Stopwatch.GetElapsedTime(s).TotalSeconds);
    }

    // ---- observations

    private IEnumerable<Measurement<long>> EventsByOutcome()
    {
        var events = new List<Measurement<long>>
        {
            Measure(_stats.Notified, ("outcome", "notified")),
            Measure(_stats.Replayed, ("outcome", "replayed")),
            Measure(_stats.Duplicates, ("outcome", "duplicate")),
            Measure(_stats.Inactive, ("outcome", "expired")),
        };
        lock (_gate)
            events.AddRange(_deadLetters.Select(d => Measure(d.Value, ("outcome", "dead_lettered"), ("reason", d.Key))));
        return events;
    }

    private IEnumerable<Measurement<long>> ConsumerLagByPartition() =>
        (_lag?.ByPartition ?? new Dictionary<TopicPartition, long>()).Select(p => Measure(p.Value, ("topic", p.Key.Topic), ("partition", p.Key.Partition.Value.ToString())));

    private List<Measurement<long>> Snapshot<TKey>(Dictionary<TKey, long> counts, Func<TKey, (string, object)> label) where TKey : notnull
    {
        lock (_gate) return counts.Select(c => Measure(c.Value, label(c.Key))).ToList();
    }

    private static string ClassName(FailureClass c) => c switch
    {
        FailureClass.Transient => "transient",
        FailureClass.PermanentForEvent => "permanent_for_event",
        _ => "permanent_for_process",
    };

    private static Measurement<T> Measure<T>(T value, params (string Key, object Value)[] tags) where T : struct =>
        new(value, tags.Select(t => new KeyValuePair<string, object?>(t.Key, t.Value)));

    public void Dispose()
    {
        _lag?.Dispose();
        _postgres?.Dispose();
        Meter.Dispose();
    }
}
