using System.Diagnostics;
using Confluent.Kafka;

namespace PromoStream;

/// <summary>
/// `--stop-when-idle N`: stop once nothing arrived for N seconds and the committed position of every input partition,
/// assigned to this process or not, has reached that partition's end. Start-up, waiting for the group, rebalances and
/// holds are never idleness, because input is still unread then.
/// </summary>
internal sealed class IdleStop(int? seconds, KafkaSettings kafka, IConsumer<byte[]?, byte[]?> consumer, CampaignLedger ledger,
    CommittedPositions committed) : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly Stopwatch _quiet = Stopwatch.StartNew();
    private readonly Stopwatch _sinceCheck = Stopwatch.StartNew();
    private readonly Stopwatch _withoutPartitions = Stopwatch.StartNew();
    private IAdminClient? _admin;

    public int? Seconds => seconds;

    public void Activity() => _quiet.Restart();

    public void Assigned(bool any)
    {
        _quiet.Restart();
        if (any) _withoutPartitions.Reset();
        else _withoutPartitions.Restart();
    }

    public bool ShouldStop()
    {
        if (seconds is not { } s || _sinceCheck.Elapsed < TimeSpan.FromSeconds(1)) return false;
        // Waiting for the group is not idleness: input published meanwhile is this instance's to read. Only an
        // instance left without partitions for long (more instances than partitions) may stop without any.
        if (_withoutPartitions.IsRunning && _withoutPartitions.Elapsed.TotalSeconds < Math.Max(s, 30)) _quiet.Restart();
        if (_quiet.Elapsed.TotalSeconds < s) return false;
        _sinceCheck.Restart();
        return IsDrained();
    }

    private bool IsDrained()
    {
        try
        {
            _admin ??= new AdminClientBuilder(Kafka.Client(kafka)).SetLogHandler((_, _) => { }).Build();
            var partitions = _admin.GetMetadata(kafka.InputTopic, Timeout).Topics.Single().Partitions
                .Select(p => new TopicPartition(kafka.InputTopic, p.PartitionId)).ToList();
            if (partitions.Count == 0) return false;
            var group = consumer.Committed(partitions, Timeout).Where(c => c.Offset.Value >= 0)
                .ToDictionary(c => c.Partition.Value, c => c.Offset.Value);
            var recorded = ledger.RecordedPositions(kafka.InputTopic);
            var ours = committed.ByPartition(kafka.InputTopic);
            foreach (var tp in partitions)
            {
                var ends = consumer.QueryWatermarkOffsets(tp, Timeout);
                var position = new[] { group, recorded, ours }.Select(d => d.GetValueOrDefault(tp.Partition.Value, -1)).Max();
                if (position < 0) position = kafka.AutoOffsetReset == "latest" ? ends.High.Value : ends.Low.Value;
                if (position < ends.High.Value)
                {
                    Log.WarnEvery(TimeSpan.FromSeconds(30), "idle-wait",
                        $"no input for {_quiet.Elapsed.TotalSeconds:0}s, but partition {tp.Partition.Value} is committed to {position} of {ends.High.Value}; not stopping yet");
                    return false;
                }
            }
            return true;
        }
        catch (Exception e) when (e is KafkaException or Npgsql.NpgsqlException or TimeoutException)
        {
            Log.WarnEvery(TimeSpan.FromSeconds(30), "idle-check", $"cannot tell whether the input is drained ({e.Message}); not stopping yet");
            return false;
        }
    }

    public void Dispose() => _admin?.Dispose();
}
