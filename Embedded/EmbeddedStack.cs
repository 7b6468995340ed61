using Confluent.Kafka;

namespace PromoStream;

/// <summary>Embedded Kafka and a throwaway PostgreSQL together, with settings that point at them.</summary>
internal sealed class EmbeddedStack : IDisposable
{
    public EmbeddedPostgres Postgres { get; }
    public EmbeddedKafka Kafka { get; }

    private EmbeddedStack(EmbeddedPostgres postgres, EmbeddedKafka kafka) => (Postgres, Kafka) = (postgres, kafka);

    public static EmbeddedStack Start()
    {
        var postgres = EmbeddedPostgres.Start();
        try { return new EmbeddedStack(postgres, EmbeddedKafka.Start()); }
        catch { postgres.Dispose(); throw; }
    }

    /// <summary>
    /// Settings for the embedded services; the topics are created here with the given partition count because
    /// the embedded broker cannot create them on request.
    /// </summary>
    public Settings CreateSettings(int partitions, string prefix = "promo", IDictionary<string, string>? overrides = null) =>
        CreateSettings(Kafka, Postgres.ConnectionString, partitions, prefix, overrides);

    public static Settings CreateSettings(EmbeddedKafka kafka, string connectionString, int partitions, string prefix = "promo",
        IDictionary<string, string>? overrides = null)
    {
        var values = new Dictionary<string, string>
        {
            ["kafka.bootstrap_servers"] = kafka.BootstrapServers,
            ["kafka.input_topic"] = $"{prefix}-campaigns",
            ["kafka.output_topic"] = $"{prefix}-notifications",
            ["kafka.dlq_topic"] = $"{prefix}-campaigns-dlq",
            ["kafka.group_id"] = $"{prefix}-stream",
            ["kafka.transactional_id"] = $"{prefix}-stream-1",
            ["kafka.connect_timeout_seconds"] = "10",
            ["postgres.connection_string"] = connectionString,
            ["processing.stats_interval_seconds"] = "2",
        };
        foreach (var (key, value) in EmbeddedKafka.ClientKeys.Concat(overrides ?? new Dictionary<string, string>())) values[key] = value;
        var settings = Settings.FromValues(values);
        var k = settings.Kafka;
        foreach (var topic in new[] { k.InputTopic, k.OutputTopic, k.DlqTopic }) kafka.CreateTopic(topic, partitions);
        return settings;
    }

    public void Dispose()
    {
        Kafka.Dispose();
        Postgres.Dispose();
    }
}

/// <summary>Reads a whole topic as a read_committed consumer sees it, for checks and summaries.</summary>
internal static class CommittedRecords
{
    public static List<ConsumeResult<byte[]?, byte[]?>> Read(KafkaSettings k, string topic, TimeSpan timeout)
    {
        var config = new ConsumerConfig(PromoStream.Kafka.Client(k))
        {
            GroupId = "promostream-reader",
            EnableAutoCommit = false,
            EnablePartitionEof = true,
            IsolationLevel = IsolationLevel.ReadCommitted,
        };
        using var consumer = new ConsumerBuilder<byte[]?, byte[]?>(config).SetLogHandler((_, _) => { }).Build();
        using var admin = new AdminClientBuilder(PromoStream.Kafka.Client(k)).SetLogHandler((_, _) => { }).Build();
        var partitions = admin.GetMetadata(topic, timeout).Topics.Single().Partitions.Select(p => p.PartitionId).ToList();
        consumer.Assign(partitions.Select(p => new TopicPartitionOffset(topic, p, Offset.Beginning)));
        var pending = partitions.ToHashSet();
        var records = new List<ConsumeResult<byte[]?, byte[]?>>();
        var deadline = DateTime.UtcNow + timeout;
        while (pending.Count > 0)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"{topic}: partitions {string.Join(",", pending)} not read to the end within {timeout.TotalSeconds:0}s");
            var r = consumer.Consume(TimeSpan.FromMilliseconds(200));
            if (r is null) continue;
            if (r.IsPartitionEOF) pending.Remove(r.Partition.Value);
            else records.Add(r);
        }
        return records;
    }
}
