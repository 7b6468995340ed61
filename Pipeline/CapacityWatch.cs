using System.Diagnostics;
using Confluent.Kafka;

namespace PromoStream;

/// <summary>
/// For a broker that keeps only so much per partition and drops older records without a word (the embedded one,
/// `kafka.partition_capacity_bytes`): estimates what each output and DLQ partition holds, from its end offset and
/// the average size of what this processor writes, and warns once per partition at 80%, before anything is dropped.
/// </summary>
internal sealed class CapacityWatch(KafkaSettings kafka, IConsumer<byte[]?, byte[]?> consumer) : IDisposable
{
    private IAdminClient? _admin;
    private readonly Dictionary<string, int> _partitions = [];
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);
    private readonly Stopwatch _sinceCheck = Stopwatch.StartNew();
    private readonly HashSet<TopicPartition> _warned = [];
    private long _records, _bytes;

    public void Produced(long records, long bytes)
    {
        Interlocked.Add(ref _records, records);
        Interlocked.Add(ref _bytes, bytes);
    }

    /// <param name="now">Check whatever the interval (before the processor exits).</param>
    public void CheckNowAndThen(bool now = false)
    {
        if (kafka.PartitionCapacityBytes <= 0 || (!now && _sinceCheck.Elapsed < Interval)) return;
        _sinceCheck.Restart();
        var records = Interlocked.Read(ref _records);
        if (records == 0) return;
        var average = Interlocked.Read(ref _bytes) / records + 70; // record overhead
        try
        {
            foreach (var topic in new[] { kafka.OutputTopic, kafka.DlqTopic })
                for (var p = 0; p < PartitionsOf(topic); p++)
                {
                    var tp = new TopicPartition(topic, p);
                    var held = consumer.QueryWatermarkOffsets(tp, TimeSpan.FromSeconds(5)).High.Value * average;
                    if (held >= kafka.PartitionCapacityBytes * 8 / 10 && _warned.Add(tp))
                        Log.Warn($"{topic} partition {p} holds about {held / 1024:N0} KB; the broker keeps about " +
                                 $"{kafka.PartitionCapacityBytes / 1024:N0} KB per partition (kafka.partition_capacity_bytes) and drops older records " +
                                 "without a word: read them soon, or use a broker without that limit");
                }
        }
        catch (KafkaException e)
        {
            Log.WarnEvery(TimeSpan.FromMinutes(1), "capacity", $"cannot estimate the output's size ({e.Error.Reason})");
        }
    }

    private int PartitionsOf(string topic)
    {
        if (_partitions.TryGetValue(topic, out var count)) return count;
        _admin ??= new AdminClientBuilder(Kafka.Client(kafka)).SetLogHandler((_, _) => { }).Build();
        return _partitions[topic] = _admin.GetMetadata(topic, TimeSpan.FromSeconds(5)).Topics.Single().Partitions.Count;
    }

    public void Dispose() => _admin?.Dispose();
}
