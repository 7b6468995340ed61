using Confluent.Kafka;
using Confluent.Kafka.Admin;

namespace PromoStream;

/// <summary>Client configuration shared by every Kafka client PromoStream makes, and the topics it needs.</summary>
internal static class Kafka
{
    public static ClientConfig Client(KafkaSettings k)
    {
        var config = new ClientConfig
        {
            BootstrapServers = k.BootstrapServers,
            SecurityProtocol = k.SecurityProtocol switch
            {
                "ssl" => SecurityProtocol.Ssl,
                "sasl_plaintext" => SecurityProtocol.SaslPlaintext,
                "sasl_ssl" => SecurityProtocol.SaslSsl,
                _ => SecurityProtocol.Plaintext,
            },
            SocketTimeoutMs = 10_000,
        };
        if (k.SecurityProtocol.StartsWith("sasl", StringComparison.Ordinal))
        {
            config.SaslMechanism = k.SaslMechanism switch
            {
                "PLAIN" => SaslMechanism.Plain,
                "SCRAM-SHA-256" => SaslMechanism.ScramSha256,
                _ => SaslMechanism.ScramSha512,
            };
            config.SaslUsername = k.SaslUsername;
            config.SaslPassword = k.SaslPassword;
        }
        if (k.SslCaLocation is not null) config.SslCaLocation = k.SslCaLocation;
        return config;
    }

    public static ProducerConfig Producer(KafkaSettings k, bool transactional, int batchSize = TopicLimits.MaxBatchSize) => new(Client(k))
    {
        TransactionalId = transactional ? k.TransactionalId : null,
        EnableIdempotence = true,
        Acks = Acks.All,
        LingerMs = 5,
        // A record batch counts against the topic's max.message.bytes as a whole (see TopicLimits).
        BatchSize = batchSize,
        MessageMaxBytes = k.MaxMessageBytes + Headroom,
        TransactionTimeoutMs = k.TransactionTimeoutMs,
        // librdkafka refuses a socket timeout longer than the transaction timeout (+100 ms).
        SocketTimeoutMs = Math.Min(10_000, k.TransactionTimeoutMs),
        QueueBufferingMaxMessages = 1_000_000,
        // One batch's records at a time is all the loop needs; more only costs memory (Produce waits when full).
        QueueBufferingMaxKbytes = 128 * 1024,
        // Keyed output lands where Java clients would put it.
        Partitioner = Partitioner.Murmur2Random,
        EnableDeliveryReports = !transactional,
        // Only the outcome is read; by default every report copies its record's key and value back into managed
        // memory (1.5 million reports in a bench run without transactions).
        DeliveryReportFields = "none",
    };

    public static ConsumerConfig Consumer(KafkaSettings k) => new(Client(k))
    {
        GroupId = k.GroupId,
        GroupInstanceId = k.GroupInstanceId,
        // Incremental rebalancing: an instance joining or leaving moves only the partitions that change owner; the
        // others keep being read without a pause.
        PartitionAssignmentStrategy = PartitionAssignmentStrategy.CooperativeSticky,
        EnableAutoCommit = false,
        EnableAutoOffsetStore = false,
        IsolationLevel = IsolationLevel.ReadCommitted,
        AutoOffsetReset = k.AutoOffsetReset == "latest" ? AutoOffsetReset.Latest : AutoOffsetReset.Earliest,
        SessionTimeoutMs = k.SessionTimeoutMs,
        HeartbeatIntervalMs = Math.Max(500, k.SessionTimeoutMs / 4),
        FetchMaxBytes = Math.Max(k.MaxMessageBytes, 16 * 1024 * 1024),
        MaxPartitionFetchBytes = k.MaxMessageBytes,
        QueuedMaxMessagesKbytes = 16 * 1024,
        // A real broker answers a fetch as soon as input arrives; the embedded one waits this out (EmbeddedKafka.ClientKeys).
        FetchWaitMaxMs = k.FetchWaitMaxMs,
    };

    /// <summary>
    /// Waits for the brokers, saying every few seconds what it waits for, and fails after the bounded wait naming where
    /// it looked; librdkafka would otherwise retry silently forever.
    /// </summary>
    public static Metadata WaitUntilReachable(KafkaSettings k, TimeSpan wait)
    {
        using var admin = new AdminClientBuilder(Client(k)).SetLogHandler((_, _) => { }).Build();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var attempt = TimeSpan.FromSeconds(Math.Min(2, Math.Max(0.5, (wait - clock.Elapsed).TotalSeconds)));
            try
            {
                return admin.GetMetadata(attempt);
            }
            catch (KafkaException e)
            {
                if (clock.Elapsed >= wait)
                    throw new ServiceUnreachableException($"cannot reach Kafka at {k.BootstrapServers} within {wait.TotalSeconds:0}s " +
                                                          $"(kafka.connect_timeout_seconds): {e.Error.Reason}");
                Log.Info($"waiting for Kafka at {k.BootstrapServers} ({clock.Elapsed.TotalSeconds:0}s of {wait.TotalSeconds:0}s)…");
            }
        }
    }

    /// <summary>Creates the topics that do not exist yet (when kafka.create_topics is on).</summary>
    public static void EnsureTopics(KafkaSettings k)
    {
        if (!k.CreateTopics) return;
        using var admin = new AdminClientBuilder(Client(k)).SetLogHandler((_, _) => { }).Build();
        var existing = PartitionCounts(admin, k);
        // A notification is its campaign plus ~100 bytes, and a dead letter is an input message plus headers: with
        // this headroom over the largest input message, whatever PromoStream writes fits the topics it creates.
        var fits = ("max.message.bytes", (k.MaxMessageBytes + Headroom).ToString());
        var wanted = new List<TopicSpecification>
        {
            Spec(k.InputTopic, k.TopicPartitions, k.ReplicationFactor),
            Spec(k.OutputTopic, k.TopicPartitions, k.ReplicationFactor, fits),
            Spec(k.DlqTopic, k.TopicPartitions, k.ReplicationFactor, fits),
        };
        var missing = wanted.Where(t => !existing.ContainsKey(t.Name)).ToList();
        if (missing.Count > 0) Create(admin, missing);
    }

    /// <summary>What PromoStream adds to a message at most: notification fields, DLQ headers, record overhead.</summary>
    public const int Headroom = 64 * 1024;

    /// <summary>
    /// The largest record the output and DLQ topics accept: their max.message.bytes where the broker tells, capped at
    /// what the producer sends. A broker that cannot say (the embedded one) is taken to accept what the producer sends.
    /// </summary>
    public static TopicLimits ReadTopicLimits(KafkaSettings k)
    {
        var producerLimit = k.MaxMessageBytes + Headroom;
        using var admin = new AdminClientBuilder(Client(k)).SetLogHandler((_, _) => { }).Build();
        try
        {
            // One short request: a real broker answers at once; the embedded one only times out.
            var described = admin.DescribeConfigsAsync(
                    [new ConfigResource { Type = ResourceType.Topic, Name = k.OutputTopic }, new ConfigResource { Type = ResourceType.Topic, Name = k.DlqTopic }],
                    new DescribeConfigsOptions { RequestTimeout = TimeSpan.FromSeconds(3) })
                .GetAwaiter().GetResult().ToDictionary(r => r.ConfigResource.Name);
            int Limit(string topic) =>
                described[topic].Entries.TryGetValue("max.message.bytes", out var entry) && int.TryParse(entry.Value, out var limit)
                    ? Math.Min(limit, producerLimit) : producerLimit;
            return new TopicLimits(Limit(k.OutputTopic), Limit(k.DlqTopic));
        }
        catch (Exception e) when (e is KafkaException or DescribeConfigsException)
        {
            Log.Info($"the broker does not tell max.message.bytes of {k.OutputTopic} and {k.DlqTopic} ({e.Message}); assuming they take what the producer sends");
            return new TopicLimits(producerLimit, producerLimit);
        }
    }

    private static TopicSpecification Spec(string name, int partitions, short replication, params (string Key, string Value)[] configs) => new()
    {
        Name = name,
        NumPartitions = partitions,
        ReplicationFactor = replication,
        Configs = configs.ToDictionary(c => c.Key, c => c.Value),
    };

    private static Dictionary<string, int> PartitionCounts(IAdminClient admin, KafkaSettings k)
    {
        var metadata = admin.GetMetadata(TimeSpan.FromSeconds(k.ConnectTimeoutSeconds));
        return metadata.Topics.Where(t => t.Error.Code == ErrorCode.NoError && t.Partitions.Count > 0)
            .ToDictionary(t => t.Topic, t => t.Partitions.Count);
    }

    private static void Create(IAdminClient admin, List<TopicSpecification> topics)
    {
        try
        {
            admin.CreateTopicsAsync(topics, new CreateTopicsOptions { RequestTimeout = TimeSpan.FromSeconds(10) })
                .GetAwaiter().GetResult();
            Log.Info($"created topics {string.Join(", ", topics.Select(t => t.Name))}");
        }
        catch (CreateTopicsException e) when (e.Results.All(r => r.Error.Code is ErrorCode.NoError or ErrorCode.TopicAlreadyExists))
        {
            // Another instance created them first.
        }
        catch (Exception e) when (e is KafkaException && IsUnsupported(((KafkaException)e).Error.Code))
        {
            Log.Warn($"the broker does not support CreateTopics ({((KafkaException)e).Error.Reason}); relying on its auto-creation of " +
                     string.Join(", ", topics.Select(t => t.Name)));
        }
    }

    private static bool IsUnsupported(ErrorCode code) =>
        code is ErrorCode.UnsupportedVersion or ErrorCode.Local_UnsupportedFeature or ErrorCode.Local_TimedOut
            or ErrorCode.RequestTimedOut or ErrorCode.InvalidRequest;
}

/// <summary>
/// The largest record each topic PromoStream writes accepts. The broker applies max.message.bytes to a whole record
/// batch, so the producer's batches are kept below the smaller limit; a single larger record still goes out alone
/// (librdkafka applies batch.size from the second record on).
/// </summary>
internal sealed record TopicLimits(int Output, int Dlq)
{
    public const int MaxBatchSize = 1_000_000;
    public int BatchSize => Math.Min(MaxBatchSize, Math.Min(Output, Dlq) - 1024);
}
