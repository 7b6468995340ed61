using System.Diagnostics;
using Confluent.Kafka;
using Confluent.Kafka.Admin;

namespace PromoStream;

/// <summary>
/// Input records waiting in each partition this instance owns: the partition's end as a read_committed reader sees it
/// (the last stable offset) minus the position the group resumes from. Measured on a thread of its own with an admin
/// client, never on the loop thread, so a stuck loop shows its lag growing. The position is the group's committed
/// offset or this instance's last Kafka commit, whichever is further; for a partition with neither (a broker that keeps
/// no transactional offsets), the position recorded in PostgreSQL, else where auto.offset.reset would start.
/// </summary>
internal sealed class ConsumerLag : IDisposable
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan RecordedInterval = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(5);

    private readonly KafkaSettings _kafka;
    private readonly Func<List<TopicPartition>> _owned;
    private readonly CommittedPositions _committed;
    private readonly Func<Dictionary<int, long>> _recorded;
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;
    private Dictionary<int, long> _recordedPositions = [];
    private long _recordedAt;
    private volatile IReadOnlyDictionary<TopicPartition, long> _byPartition = new Dictionary<TopicPartition, long>();
    private long _lastSuccess;
    private volatile string _lastError = "not asked yet";

    public ConsumerLag(KafkaSettings kafka, Func<List<TopicPartition>> owned, CommittedPositions committed, Func<Dictionary<int, long>> recorded)
    {
        (_kafka, _owned, _committed, _recorded) = (kafka, owned, committed, recorded);
        _thread = new Thread(Run) { IsBackground = true, Name = "consumer-lag" };
        _thread.Start();
    }

    /// <summary>The lag of each partition owned at the last measurement; a partition no longer owned is absent.</summary>
    public IReadOnlyDictionary<TopicPartition, long> ByPartition => _byPartition;

    /// <summary>Kafka answered the last measurement, and it is recent.</summary>
    public bool Reachable => Since(Interlocked.Read(ref _lastSuccess)) < 3 * Interval + RequestTimeout;

    public string LastError => _lastError;

    private static TimeSpan Since(long timestamp) => timestamp == 0 ? TimeSpan.MaxValue : Stopwatch.GetElapsedTime(timestamp);

    private void Run()
    {
        // The thread owns its admin client: disposing it while a request runs on this thread would free it under the request.
        using var admin = new AdminClientBuilder(Kafka.Client(_kafka)).SetLogHandler((_, _) => { }).Build();
        do
        {
            try
            {
                _byPartition = Measure(admin, _owned());
                Interlocked.Exchange(ref _lastSuccess, Stopwatch.GetTimestamp());
            }
            catch (Exception e)
            {
                // Whatever it is (broker gone, an answer without a partition), a measurement must never take the process down.
                _lastError = e.Message;
            }
        } while (!_stop.Token.WaitHandle.WaitOne(Interval));
    }

    private Dictionary<TopicPartition, long> Measure(IAdminClient admin, List<TopicPartition> owned)
    {
        owned = owned.Where(tp => tp.Topic == _kafka.InputTopic).ToList();
        if (owned.Count == 0)
        {
            admin.GetMetadata(_kafka.InputTopic, RequestTimeout); // still tells whether Kafka answers
            return [];
        }
        var ends = Offsets(admin, owned, OffsetSpec.Latest());
        var group = admin.ListConsumerGroupOffsetsAsync([new ConsumerGroupTopicPartitions(_kafka.GroupId, owned)],
                new ListConsumerGroupOffsetsOptions { RequestTimeout = RequestTimeout })
            .GetAwaiter().GetResult().SelectMany(r => r.Partitions)
            .Where(p => p.Error.Code == ErrorCode.NoError && p.Offset.Value >= 0)
            .ToDictionary(p => p.TopicPartition, p => p.Offset.Value);
        var ours = _committed.ByPartition(_kafka.InputTopic);
        var positions = new Dictionary<TopicPartition, long>();
        foreach (var tp in owned)
        {
            var known = Math.Max(group.GetValueOrDefault(tp, -1), ours.GetValueOrDefault(tp.Partition.Value, -1));
            if (known < 0) known = Recorded().GetValueOrDefault(tp.Partition.Value, -1);
            if (known >= 0) positions[tp] = known;
        }
        var unknown = owned.Where(tp => !positions.ContainsKey(tp)).ToList();
        if (unknown.Count > 0)
            foreach (var (tp, offset) in Offsets(admin, unknown, _kafka.AutoOffsetReset == "latest" ? OffsetSpec.Latest() : OffsetSpec.Earliest()))
                positions[tp] = offset;
        return owned.ToDictionary(tp => tp, tp => Math.Max(0, ends[tp] - positions[tp]));
    }

    private static Dictionary<TopicPartition, long> Offsets(IAdminClient admin, List<TopicPartition> partitions, OffsetSpec spec) =>
        admin.ListOffsetsAsync(partitions.Select(tp => new TopicPartitionOffsetSpec { TopicPartition = tp, OffsetSpec = spec }),
                new ListOffsetsOptions { IsolationLevel = IsolationLevel.ReadCommitted, RequestTimeout = RequestTimeout })
            .GetAwaiter().GetResult().ResultInfos
            .ToDictionary(r => r.TopicPartitionOffsetError.TopicPartition, r => r.TopicPartitionOffsetError.Offset.Value);

    /// <summary>Re-read now and then, not every time: while PostgreSQL is down the last answer stands.</summary>
    private Dictionary<int, long> Recorded()
    {
        if (Since(_recordedAt) < RecordedInterval) return _recordedPositions;
        _recordedAt = Stopwatch.GetTimestamp();
        try { _recordedPositions = _recorded(); }
        catch (Exception e) when (e is Npgsql.NpgsqlException or TimeoutException or InvalidOperationException) { }
        return _recordedPositions;
    }

    /// <summary>
    /// Waits (a request's timeout at most) for the thread to destroy its admin client: one still running while the
    /// process exits can crash the exit, as librdkafka's threads outlive the runtime's shutdown.
    /// </summary>
    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join(RequestTimeout + TimeSpan.FromSeconds(1));
    }
}
