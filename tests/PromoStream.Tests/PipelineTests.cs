using System.Text.Json;
using Confluent.Kafka;
using Xunit;

namespace PromoStream.Tests;

/// <summary>The whole loop, in this process, on the embedded Kafka and a throwaway PostgreSQL.</summary>
[Collection(Stack.Name)]
public class PipelineTests
{
    public const string Restaurant = "123e4567-e89b-12d3-a456-426614174000";
    public const string SampleEvent = """{"restaurant_id":"123e4567-e89b-12d3-a456-426614174000","adv_campaign_id":"123e4567-e89b-12d3-a456-426614174003","adv_campaign_content":"first campaign","adv_campaign_owner":"Ivanov Ivan Ivanovich","adv_campaign_owner_contact":"iiivanov@restaurant.ru","adv_campaign_datetime_start":1659203516,"adv_campaign_datetime_end":2659207116,"datetime_created":1659131516}""";
    public static readonly string[] SampleClients =
        new[] { "223e", "323e", "423e", "523e", "623e", "723e", "823e", "023e" }.Select(p => p + "4567-e89b-12d3-a456-426614174000").ToArray();

    internal static void InsertContractSample(string db)
    {
        string[] clients = ["223e", "323e", "423e", "523e", "623e", "723e", "823e", "923e", "923e", "023e"];
        for (var i = 0; i < clients.Length; i++)
            PostgresServer.Execute(db, "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ($1, $2)",
                clients[i] + "4567-e89b-12d3-a456-426614174000", i is 7 or 8 ? "123e4567-e89b-12d3-a456-426614174001" : Restaurant);
    }

    internal static void Publish(Settings s, params (string? Key, byte[] Value)[] events)
    {
        using var producer = new ProducerBuilder<byte[]?, byte[]>(new ProducerConfig(Kafka.Client(s.Kafka))).Build();
        foreach (var (key, value) in events)
            producer.Produce(s.Kafka.InputTopic, new Message<byte[]?, byte[]> { Key = key is null ? null : Text.Utf8(key), Value = value });
        Assert.Equal(0, producer.Flush(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public void ContractSampleGivesEightNotificationsInBothSinksAndBadEventsGoToTheDlqWithTheirBytes()
    {
        var db = PostgresServer.NewDatabase();
        InsertContractSample(db);
        using var kafka = EmbeddedKafka.Start();
        var settings = EmbeddedStack.CreateSettings(kafka, db, partitions: 4, prefix: "sample");
        var expired = SampleEvent.Replace("426614174003", "426614174099").Replace("2659207116", "1659207116");
        var noSubscribers = SampleEvent.Replace("426614174000\",\"adv", "426614174077\",\"adv").Replace("426614174003", "426614174098");
        byte[][] malformed = [Text.Utf8("{\"restaurant_id\":"), Text.Utf8(SampleEvent.Replace("\"datetime_created\"", "\"created\"")),
            Text.Utf8(SampleEvent.Replace("2659207116", "1000000000")), [0xff, 0xfe, 0x00]];
        Publish(settings, (Restaurant, Text.Utf8(SampleEvent)), (Restaurant, Text.Utf8(SampleEvent)), (Restaurant, Text.Utf8(expired)),
            (null, Text.Utf8(noSubscribers)), ("k1", malformed[0]), ("k2", malformed[1]), ("k3", malformed[2]), ("k4", malformed[3]));

        var stats = Processor.Run(settings, stopWhenIdleSeconds: 2, Deadline());

        Assert.Equal(8, stats.Consumed);
        Assert.Equal(4, stats.Invalid);
        Assert.Equal(1, stats.Inactive);
        Assert.Equal(1, stats.Duplicates);
        Assert.Equal(1, stats.NoSubscribers);
        var rows = PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback WHERE adv_campaign_id = $1", "123e4567-e89b-12d3-a456-426614174003");
        Assert.Equal(8, rows);
        Assert.Equal(8, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback"));
        Assert.Equal(8, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback WHERE client_id = ANY($1)", (object)SampleClients));

        var output = CommittedRecords.Read(settings.Kafka, settings.Kafka.OutputTopic, TimeSpan.FromSeconds(20));
        Assert.Equal(SampleClients.Order(), output.Select(r => Text.Of(r.Message.Key)).Order());
        foreach (var record in output)
        {
            using var json = JsonDocument.Parse(record.Message.Value);
            Assert.Equal(10, json.RootElement.EnumerateObject().Count());
            Assert.Equal(Text.Of(record.Message.Key), json.RootElement.GetProperty("client_id").GetString());
            Assert.Equal(2659207116, json.RootElement.GetProperty("adv_campaign_datetime_end").GetInt64());
        }

        var dlq = CommittedRecords.Read(settings.Kafka, settings.Kafka.DlqTopic, TimeSpan.FromSeconds(20));
        Assert.Equal(4, dlq.Count);
        foreach (var (bytes, i) in malformed.Select((b, i) => (b, i)))
        {
            var record = Assert.Single(dlq, r => Text.Of(r.Message.Key) == $"k{i + 1}");
            Assert.Equal(bytes, record.Message.Value);
            Assert.True(record.Message.Headers.TryGetLastBytes("dlq.reason", out var reason));
            Assert.NotEmpty(Text.Of(reason));
        }
    }

    [Fact]
    public void ADuplicateAfterARestartProducesNoSecondNotification()
    {
        var db = PostgresServer.NewDatabase();
        InsertContractSample(db);
        using var kafka = EmbeddedKafka.Start();
        var settings = EmbeddedStack.CreateSettings(kafka, db, partitions: 4, prefix: "restart");
        Publish(settings, (Restaurant, Text.Utf8(SampleEvent)));
        Processor.Run(settings, stopWhenIdleSeconds: 2, Deadline());

        // A new processor instance: the ledger in PostgreSQL, not its memory, knows the campaign.
        Publish(settings, (Restaurant, Text.Utf8(SampleEvent)));
        var second = Processor.Run(settings, stopWhenIdleSeconds: 2, Deadline());

        Assert.Equal(0, second.Notifications);
        Assert.True(second.Duplicates >= 1);
        Assert.Equal(8, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback"));
        Assert.Equal(8, CommittedRecords.Read(settings.Kafka, settings.Kafka.OutputTopic, TimeSpan.FromSeconds(20)).Count);
    }

    // The idle stop ends these runs; the deadline only keeps a processor that never goes idle from hanging the suite.
    private static CancellationToken Deadline() => new CancellationTokenSource(TimeSpan.FromMinutes(3)).Token;
}
