using System.Diagnostics;
using System.Text;
using Npgsql;

namespace PromoStream;

/// <summary>The whole pipeline on the embedded stack, with the contract's sample data among generated traffic.</summary>
internal static class Demo
{
    private const string SampleRestaurant = "123e4567-e89b-12d3-a456-426614174000";
    private const string SampleCampaign = "123e4567-e89b-12d3-a456-426614174003";
    private const string SampleEvent = """{"restaurant_id":"123e4567-e89b-12d3-a456-426614174000","adv_campaign_id":"123e4567-e89b-12d3-a456-426614174003","adv_campaign_content":"first campaign","adv_campaign_owner":"Ivanov Ivan Ivanovich","adv_campaign_owner_contact":"iiivanov@restaurant.ru","adv_campaign_datetime_start":1659203516,"adv_campaign_datetime_end":2659207116,"datetime_created":1659131516}""";

    public static int Run(CommandLine cli, CancellationToken stop)
    {
        var clock = Stopwatch.StartNew();
        var options = new SimulatorOptions(Count: cli.Int("--events", 3000, 1, 1_000_000), Rate: 0, Duplicates: 0.1,
            Malformed: 0.02, Expired: 0.05, NoSubscribers: 0.1, Seed: cli.Int("--seed", 1), Restaurants: 200,
            SeedSubscribers: 2000, File: null, ExpectFile: null);
        Log.Info("demo: starting the embedded PostgreSQL and Kafka", ("component", "demo"));
        using var stack = EmbeddedStack.Start();
        var settings = stack.CreateSettings(partitions: 8, prefix: "demo");
        using var dataSource = PostgresDatabase.CreateDataSource(settings.Postgres.ConnectionString);
        using (var store = new PostgresDatabase(dataSource)) store.ApplySchema();
        InsertContractSample(dataSource);
        Simulator.SeedSubscribers(dataSource, options);
        Log.Info($"demo: schema applied, {options.SeedSubscribers + 10} subscription rows; publishing {options.Count + 1} events",
            ("component", "demo"), ("subscription_rows", options.SeedSubscribers + 10), ("events", options.Count + 1));

        var sample = new SimulatedEvent(Encoding.UTF8.GetBytes(SampleRestaurant), Encoding.UTF8.GetBytes(SampleEvent), EventKind.Valid, null);
        var input = Simulator.Publish(settings.Kafka, Simulator.Generate(options, DateTimeOffset.UtcNow.ToUnixTimeSeconds()).Prepend(sample),
            options.Count + 1, rate: 0, stop);
        Log.Info("demo: processing until the input is drained", ("component", "demo"));
        var stats = Processor.Run(settings, stopWhenIdleSeconds: 2, stop);

        var output = CommittedRecords.Read(settings.Kafka, settings.Kafka.OutputTopic, TimeSpan.FromSeconds(30));
        var dlq = CommittedRecords.Read(settings.Kafka, settings.Kafka.DlqTopic, TimeSpan.FromSeconds(30));
        var rows = Count(dataSource, "SELECT count(*) FROM public.subscribers_feedback");
        var sampleRows = Count(dataSource, "SELECT count(*) FROM public.subscribers_feedback WHERE adv_campaign_id = $1", SampleCampaign);
        var sampleRecords = output.Count(r => Encoding.UTF8.GetString(r.Message.Value!).Contains(SampleCampaign, StringComparison.Ordinal));

        Console.WriteLine($"""
            PromoStream demo ({clock.Elapsed.TotalSeconds:0.0} s)
              input      {input.Line()}
              processor  consumed={stats.Consumed} invalid_to_dlq={stats.Invalid} inactive={stats.Inactive} duplicate={stats.Duplicates} no_subscribers={stats.NoSubscribers} notifications={stats.Notifications} transactions={stats.Transactions}
              postgres   subscribers_feedback rows={rows}
              kafka      {settings.Kafka.OutputTopic} records={output.Count}, {settings.Kafka.DlqTopic} records={dlq.Count} (read_committed)
              contract   sample event -> {sampleRecords} records, {sampleRows} rows (the contract says 8)
              sample output records:
                {Encoding.UTF8.GetString(output[0].Message.Value!)}
                {Encoding.UTF8.GetString(output[^1].Message.Value!)}
              sample DLQ reason: {DlqReason(dlq)}
            """);
        var consistent = rows == output.Count && rows == stats.Notifications && dlq.Count == input.Malformed && sampleRows == 8 && sampleRecords == 8;
        Console.WriteLine(consistent ? "demo: ok" : "demo: FAILED: the sinks disagree with each other or with the contract");
        return consistent ? 0 : 1;
    }

    /// <summary>The contract's ten sample subscription rows, duplicate pair included.</summary>
    internal static void InsertContractSample(NpgsqlDataSource dataSource)
    {
        string[] clients = ["223e", "323e", "423e", "523e", "623e", "723e", "823e", "923e", "923e", "023e"];
        using var batch = dataSource.CreateBatch();
        for (var i = 0; i < clients.Length; i++)
        {
            var command = new NpgsqlBatchCommand("INSERT INTO public.subscribers_restaurants (client_id, restaurant_id) VALUES ($1, $2)");
            command.Parameters.Add(new NpgsqlParameter { Value = clients[i] + "4567-e89b-12d3-a456-426614174000" });
            command.Parameters.Add(new NpgsqlParameter { Value = i is 7 or 8 ? "123e4567-e89b-12d3-a456-426614174001" : SampleRestaurant });
            batch.BatchCommands.Add(command);
        }
        batch.ExecuteNonQuery();
    }

    private static long Count(NpgsqlDataSource dataSource, string sql, params object[] parameters)
    {
        using var command = dataSource.CreateCommand(sql);
        foreach (var p in parameters) command.Parameters.Add(new NpgsqlParameter { Value = p });
        return (long)command.ExecuteScalar()!;
    }

    private static string DlqReason(List<Confluent.Kafka.ConsumeResult<byte[]?, byte[]?>> dlq) =>
        dlq.Count == 0 ? "(none)" : dlq[0].Message.Headers.TryGetLastBytes("dlq.reason", out var reason) ? Encoding.UTF8.GetString(reason) : "(no header)";
}
