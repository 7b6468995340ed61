using System.Text;
using Confluent.Kafka;

namespace PromoStream;

/// <summary>
/// `--dev`: a playground for several terminals in one command. The embedded Kafka with the default topics, a
/// throwaway PostgreSQL with the schema and sample subscribers, and the environment variables that let plain
/// `dotnet run -- --process` and `--produce` find them from any directory, with no config file. Runs until Ctrl+C,
/// then removes everything it made.
/// </summary>
internal static class Dev
{
    // The embedded broker keeps about this much of each partition and silently drops what is older.
    internal const long PartitionCapacityBytes = 5L * 1024 * 1024;

    // Sized so that the README's numbers (10,000 events: about 70,000 notifications of ~450 bytes) fill the output
    // topic to about a fifth: room to spare, and a warning long before anything would be dropped.
    private const int InputPartitions = 8, OutputPartitions = 32, DlqPartitions = 4;

    /// <summary>The default topics, group and ids of credentials.yaml.example.</summary>
    internal static Dictionary<string, string> DefaultKeys(string bootstrap, string connectionString) => new(EmbeddedKafka.ClientKeys)
    {
        ["kafka.bootstrap_servers"] = bootstrap,
        ["kafka.input_topic"] = "restaurant-promotions",
        ["kafka.output_topic"] = "subscriber-notifications",
        ["kafka.dlq_topic"] = "restaurant-promotions-dlq",
        ["kafka.group_id"] = "promo-stream",
        ["kafka.transactional_id"] = "promo-stream-1",
        ["kafka.partition_capacity_bytes"] = PartitionCapacityBytes.ToString(), // so that the processor warns too
        ["postgres.connection_string"] = connectionString,
    };

    public static int Run(CommandLine cli, CancellationToken stop)
    {
        Log.Info("dev: starting the embedded PostgreSQL and Kafka");
        using var stack = EmbeddedStack.Start();
        var keys = DefaultKeys(stack.Kafka.BootstrapServers, stack.Postgres.ConnectionString);
        var settings = Settings.FromValues(keys);
        var k = settings.Kafka;
        stack.Kafka.CreateTopic(k.InputTopic, InputPartitions);
        stack.Kafka.CreateTopic(k.OutputTopic, OutputPartitions);
        stack.Kafka.CreateTopic(k.DlqTopic, DlqPartitions);

        using var dataSource = PostgresDatabase.CreateDataSource(settings.Postgres.ConnectionString);
        new PostgresDatabase(dataSource).ApplySchema();
        var subscribers = new SimulatorOptions(Count: 0, Rate: 0, Duplicates: 0, Malformed: 0, Expired: 0, NoSubscribers: 0,
            Seed: cli.Int("--seed", 1), Restaurants: 100, SeedSubscribers: 1000, File: null, ExpectFile: null);
        Simulator.SeedSubscribers(dataSource, subscribers);
        Demo.InsertContractSample(dataSource);

        var exports = string.Join("\n", keys.Select(kv => $"export {Settings.EnvPrefix}{kv.Key.Replace(".", "__").ToUpperInvariant()}='{kv.Value}'"));
        Console.WriteLine($"""

            PromoStream dev playground: embedded Kafka at {stack.Kafka.BootstrapServers}, PostgreSQL at {settings.Postgres.Describe()}
            (schema applied; 1,010 subscription rows over 100 restaurants and the contract's sample). Topics: {k.InputTopic}
            ({InputPartitions} partitions), {k.OutputTopic} ({OutputPartitions}), {k.DlqTopic} ({DlqPartitions}); the embedded broker keeps
            about {PartitionCapacityBytes / (1024 * 1024)} MB per partition (~{OutputPartitions * PartitionCapacityBytes / 450 / 1000 * 1000:N0} notifications) and warns here before dropping any.

            In each other terminal, paste:

            {exports}

            then, from any directory of the repository:  dotnet run -- --process   (and)   dotnet run -- --produce --count 10000
            Ctrl+C here stops the playground and removes everything it made.

            """);
        Console.Out.Flush();
        WatchCapacity(k, stop);
        Log.Info("dev: stopping; the embedded Kafka and PostgreSQL and their data are removed");
        return 0;
    }

    /// <summary>
    /// Reads every topic as it grows and warns while a partition nears what the embedded broker keeps, so that data is
    /// never dropped unnoticed: the broker itself says nothing when it drops.
    /// </summary>
    private static void WatchCapacity(KafkaSettings k, CancellationToken stop)
    {
        var config = new ConsumerConfig(Kafka.Client(k))
        {
            GroupId = "promostream-dev-capacity",
            EnableAutoCommit = false,
            IsolationLevel = IsolationLevel.ReadUncommitted, // what the broker holds, committed or not
            AutoOffsetReset = AutoOffsetReset.Earliest,
        };
        using var consumer = new ConsumerBuilder<byte[]?, byte[]?>(config).SetLogHandler((_, _) => { }).Build();
        consumer.Subscribe([k.InputTopic, k.OutputTopic, k.DlqTopic]);
        var bytes = new Dictionary<TopicPartition, long>();
        var warned = new HashSet<TopicPartition>();
        while (!stop.IsCancellationRequested)
        {
            var record = consumer.Consume(TimeSpan.FromMilliseconds(500));
            if (record is null || record.IsPartitionEOF) continue;
            var size = bytes.GetValueOrDefault(record.TopicPartition) + (record.Message.Key?.Length ?? 0) + (record.Message.Value?.Length ?? 0) + 70;
            bytes[record.TopicPartition] = size;
            if (size < PartitionCapacityBytes * 8 / 10 || !warned.Add(record.TopicPartition)) continue;
            Log.Warn(CapacityWarning(record.TopicPartition, size));
        }
    }

    internal static string CapacityWarning(TopicPartition partition, long bytes) =>
        $"dev: the embedded broker holds {bytes / 1024:N0} KB in {partition.Topic} partition {partition.Partition.Value}; at about " +
        $"{PartitionCapacityBytes / 1024:N0} KB it silently drops the oldest records: restart --dev for a fresh broker, or use a real Kafka (README)";
}
