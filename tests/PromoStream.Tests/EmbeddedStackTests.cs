using System.Net.Sockets;
using Confluent.Kafka;
using Npgsql;
using Xunit;

namespace PromoStream.Tests;

/// <summary>The embedded Kafka mock cluster and the throwaway PostgreSQL behave as the demo and outage tests assume.</summary>
public class EmbeddedStackTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    [Fact]
    public void MockClusterCreatesTopicsWithTheRequestedPartitionCount()
    {
        using var kafka = EmbeddedKafka.Start();
        kafka.CreateTopic("t", 8);

        using var admin = Admin(kafka);
        var topic = admin.GetMetadata("t", Patience).Topics.Single();

        Assert.Equal(ErrorCode.NoError, topic.Error.Code);
        Assert.Equal(Enumerable.Range(0, 8), topic.Partitions.Select(p => p.PartitionId).Order());
    }

    [Fact]
    public void CreatingAnExistingTopicFailsWithTheBrokerReason()
    {
        using var kafka = EmbeddedKafka.Start();
        kafka.CreateTopic("t", 2);

        var error = Assert.Throws<InvalidOperationException>(() => kafka.CreateTopic("t", 2));
        Assert.Contains("topic t", error.Message);
        Assert.Contains("exists", error.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void TransactionalRecordIsReadBackByAReadCommittedConsumer()
    {
        using var kafka = EmbeddedKafka.Start();
        kafka.CreateTopic("orders", 1);
        using (var producer = new ProducerBuilder<string, string>(new ProducerConfig
               {
                   BootstrapServers = kafka.BootstrapServers,
                   TransactionalId = "embedded-stack-test",
               }).SetLogHandler((_, _) => { }).Build())
        {
            producer.InitTransactions(Patience);
            producer.BeginTransaction();
            producer.Produce("orders", new Message<string, string> { Key = "k", Value = "committed" });
            producer.CommitTransaction(Patience);
        }

        using var consumer = new ConsumerBuilder<string, string>(new ConsumerConfig
        {
            BootstrapServers = kafka.BootstrapServers,
            GroupId = "embedded-stack-test",
            IsolationLevel = IsolationLevel.ReadCommitted,
            EnableAutoCommit = false,
        }).SetLogHandler((_, _) => { }).Build();
        consumer.Assign(new TopicPartitionOffset("orders", 0, Offset.Beginning));
        var record = consumer.Consume(Patience);

        Assert.NotNull(record);
        Assert.Equal(("k", "committed"), (record.Message.Key, record.Message.Value));
    }

    [Fact]
    public void BrokerDownRefusesClientsUntilItIsUpAgain()
    {
        using var kafka = EmbeddedKafka.Start();
        kafka.CreateTopic("t", 1);
        using var admin = Admin(kafka);
        admin.GetMetadata("t", Patience);

        kafka.SetBrokerDown(1);
        Assert.Throws<KafkaException>(() => admin.GetMetadata("t", TimeSpan.FromSeconds(2)));

        kafka.SetBrokerUp(1);
        Eventually.True(() => MetadataAvailable(admin, "t"), Patience, "metadata after the broker came back");
    }

    [Fact]
    public void UnknownBrokerIdIsRejected()
    {
        using var kafka = EmbeddedKafka.Start(brokers: 2);
        Assert.Throws<InvalidOperationException>(() => kafka.SetBrokerDown(3));
    }

    [Fact]
    public void PostgresAnswersStopsRestartsAndLeavesNothingBehind()
    {
        var postgres = EmbeddedPostgres.Start();
        var root = postgres.RootDirectory;
        var connectionString = new NpgsqlConnectionStringBuilder(postgres.ConnectionString)
        {
            Pooling = false, // every query below must reach the server as it is now, not a pooled socket
            Timeout = 3,
        }.ConnectionString;
        try
        {
            Assert.Equal(1, SelectOne(connectionString));
            Assert.Equal("127.0.0.1", postgres.Host);
            Assert.Contains($"Port={postgres.Port}", postgres.ConnectionString);

            postgres.Stop();
            Assert.ThrowsAny<NpgsqlException>(() => SelectOne(connectionString));

            postgres.Restart();
            Assert.Equal(1, SelectOne(connectionString));
            var postmaster = PostmasterPid(postgres.DataDirectory);
            Assert.True(IsAlive(postmaster));

            postgres.Dispose();

            Assert.False(Directory.Exists(root), $"{root} still exists");
            Assert.False(AcceptsConnections(postgres.Port), $"port {postgres.Port} still accepts connections");
            Eventually.True(() => !IsAlive(postmaster), Patience, $"postmaster {postmaster} gone");
        }
        finally
        {
            postgres.Dispose(); // idempotent; cleans up when an assertion above failed
        }
    }

    private static IAdminClient Admin(EmbeddedKafka kafka) =>
        new AdminClientBuilder(new AdminClientConfig
        {
            BootstrapServers = kafka.BootstrapServers,
            ReconnectBackoffMaxMs = 500, // the default 10 s backoff would dominate the broker-up wait
        }).SetLogHandler((_, _) => { }).Build();

    private static bool MetadataAvailable(IAdminClient admin, string topic)
    {
        try { return admin.GetMetadata(topic, TimeSpan.FromSeconds(1)).Topics.Single().Error.Code == ErrorCode.NoError; }
        catch (KafkaException) { return false; }
    }

    private static int SelectOne(string connectionString)
    {
        using var connection = new NpgsqlConnection(connectionString);
        connection.Open();
        using var command = new NpgsqlCommand("SELECT 1", connection);
        return (int)command.ExecuteScalar()!;
    }

    private static int PostmasterPid(string dataDirectory) =>
        int.Parse(File.ReadLines(Path.Combine(dataDirectory, "postmaster.pid")).First());

    /// <summary>Running, as opposed to absent or a zombie nobody has reaped yet.</summary>
    private static bool IsAlive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0] != 'Z';
        }
        catch (IOException) { return false; }
    }

    private static bool AcceptsConnections(int port)
    {
        try
        {
            using var client = new TcpClient();
            client.Connect("127.0.0.1", port);
            return true;
        }
        catch (SocketException) { return false; }
    }
}
