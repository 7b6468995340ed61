using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>`--broker` in its own process, so processors can be killed and restarted around it.</summary>
public sealed class BrokerProcess : IDisposable
{
    private readonly PromoStreamProcess _process;
    public string BootstrapServers { get; }

    public BrokerProcess(string configFile, int partitions)
    {
        var file = Path.Combine(Path.GetDirectoryName(configFile)!, "bootstrap.txt");
        _process = new PromoStreamProcess(["--broker", "--config", configFile, "--partitions", partitions.ToString(), "--broker-file", file]);
        Eventually.True(() => File.Exists(file) && File.ReadAllText(file).EndsWith('\n') || _process.HasExited, TimeSpan.FromSeconds(30), "broker address file");
        if (_process.HasExited) throw new InvalidOperationException("--broker exited:\n" + _process.Tail());
        BootstrapServers = File.ReadAllText(file).Trim();
    }

    public void Dispose() => _process.Dispose();
}

/// <summary>
/// One scenario's world: a database, a config file, the embedded broker in its own process, and processors
/// started as real processes against them. Everything it starts is gone when it is disposed.
/// </summary>
internal sealed class Scenario : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("promostream-scenario-");
    private readonly List<PromoStreamProcess> _processes = [];
    private readonly BrokerProcess? _broker;
    public string Database { get; }
    public string ConfigFile { get; }
    public Settings Settings { get; }

    public Scenario(string? database = null, int partitions = 4, string extraYaml = "")
    {
        Database = database ?? PostgresServer.NewDatabase();
        ConfigFile = Path.Combine(_dir.FullName, "credentials.yaml");
        File.WriteAllText(ConfigFile, Yaml("PLACEHOLDER:1", extraYaml));
        _broker = new BrokerProcess(ConfigFile, partitions);
        File.WriteAllText(ConfigFile, Yaml(_broker.BootstrapServers, extraYaml));
        Settings = PromoStream.Settings.Load(ConfigFile, new Dictionary<string, string?>());
    }

    private string Yaml(string bootstrap, string extra) => $"""
        kafka:
          bootstrap_servers: "{bootstrap}"
          input_topic: "campaigns"
          output_topic: "notifications"
          dlq_topic: "campaigns-dlq"
          group_id: "promo-stream"
          transactional_id: "promo-stream-1"
          create_topics: false
          session_timeout_ms: 6000
          connect_timeout_seconds: 10
        postgres:
          connection_string: "{Database}"
          connect_timeout_seconds: 10
        processing:
          stats_interval_seconds: 1
          retry_backoff_max_ms: 2000
        {extra}
        """;

    public PromoStreamProcess Processor(string transactionalId = "promo-stream-1", int? stopWhenIdle = null, IDictionary<string, string>? environment = null)
    {
        var args = new List<string> { "--process", "--config", ConfigFile };
        if (stopWhenIdle is { } idle) args.AddRange(["--stop-when-idle", idle.ToString()]);
        var env = new Dictionary<string, string>(environment ?? new Dictionary<string, string>()) { ["PROMOSTREAM__KAFKA__TRANSACTIONAL_ID"] = transactionalId };
        var p = new PromoStreamProcess(args, env);
        _processes.Add(p);
        return p;
    }

    public SimulatorOptions Workload(int count, int rate, int restaurants = 40, int seed = 1) => new(
        Count: count, Rate: rate, Duplicates: 0.1, Malformed: 0.02, Expired: 0.05, NoSubscribers: 0.1, Seed: seed,
        Restaurants: restaurants, SeedSubscribers: restaurants * 8, File: null, ExpectFile: null);

    public void SeedSubscribers(SimulatorOptions workload)
    {
        using var dataSource = PostgresDatabase.CreateDataSource(Database);
        Simulator.SeedSubscribers(dataSource, workload);
    }

    /// <summary>Publishes in the background; the task's result says what was sent and what must come out.</summary>
    public Task<SimulationReport> PublishInBackground(SimulatorOptions workload) => Task.Run(() =>
        Simulator.Publish(Settings.Kafka, Simulator.Generate(workload, DateTimeOffset.UtcNow.ToUnixTimeSeconds()), workload.Count, workload.Rate, CancellationToken.None));

    public void Dispose()
    {
        foreach (var p in _processes) p.Dispose();
        _broker?.Dispose();
        _dir.Delete(recursive: true);
    }
}

/// <summary>The final rows against the rows the published events must give: none missing, none extra, none twice.</summary>
internal sealed record RowComparison(long Expected, long Actual, long Missing, long Extra, long Twice)
{
    public bool Exact => Missing == 0 && Extra == 0 && Twice == 0 && Expected == Actual;
    public override string ToString() => $"rows expected={Expected} actual={Actual} missing={Missing} extra={Extra} duplicates={Twice}";

    public static RowComparison Of(string database, SimulationReport report)
    {
        using var connection = new NpgsqlConnection(database);
        connection.Open();
        using (var create = new NpgsqlCommand("CREATE TEMP TABLE expected_campaigns (restaurant_id text, adv_campaign_id text)", connection))
            create.ExecuteNonQuery();
        using (var copy = connection.BeginBinaryImport("COPY expected_campaigns FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var (restaurant, campaign) in report.ExpectedCampaigns)
            {
                copy.StartRow();
                copy.Write(restaurant, NpgsqlTypes.NpgsqlDbType.Text);
                copy.Write(campaign, NpgsqlTypes.NpgsqlDbType.Text);
            }
            copy.Complete();
        }
        using var compare = new NpgsqlCommand("""
            WITH expected AS (SELECT DISTINCT e.restaurant_id, e.adv_campaign_id, s.client_id::text AS client_id
                              FROM expected_campaigns e JOIN subscribers_restaurants s ON s.restaurant_id = e.restaurant_id),
                 actual AS (SELECT restaurant_id, adv_campaign_id, client_id FROM subscribers_feedback)
            SELECT (SELECT count(*) FROM expected),
                   (SELECT count(*) FROM actual),
                   (SELECT count(*) FROM (SELECT * FROM expected EXCEPT SELECT * FROM actual) m),
                   (SELECT count(*) FROM (SELECT * FROM actual EXCEPT SELECT * FROM expected) x),
                   (SELECT count(*) - count(DISTINCT (restaurant_id, adv_campaign_id, client_id)) FROM actual)
            """, connection);
        using var r = compare.ExecuteReader();
        r.Read();
        return new RowComparison(r.GetInt64(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3), r.GetInt64(4));
    }
}

internal static class Figure
{
    /// <summary>Test output lines starting "figure:" are echoed by test.sh and quoted in the README.</summary>
    public static void Report(ITestOutputHelper output, string text) => output.WriteLine("figure: " + text);
}

/// <summary>
/// Both sinks side by side: the rows of subscribers_feedback and the read_committed records of the output topic, each
/// as (restaurant, campaign, client, trigger time). Identical means the same multiset: Kafka mirrors PostgreSQL.
/// </summary>
internal sealed record SinkComparison(int Rows, int Records, int OnlyInRows, int OnlyInRecords, int RecordsTwice)
{
    public bool Identical => OnlyInRows == 0 && OnlyInRecords == 0 && RecordsTwice == 0 && Rows == Records;
    public override string ToString() => $"rows={Rows} records={Records} only_in_rows={OnlyInRows} only_in_records={OnlyInRecords} records_twice={RecordsTwice}";

    public static SinkComparison Of(string database, KafkaSettings kafka)
    {
        var rows = new List<string>();
        using (var connection = new NpgsqlConnection(database))
        {
            connection.Open();
            using var command = new NpgsqlCommand("SELECT restaurant_id, adv_campaign_id, client_id, trigger_datetime_created FROM subscribers_feedback", connection);
            using var r = command.ExecuteReader();
            while (r.Read()) rows.Add($"{r.GetString(0)}/{r.GetString(1)}/{r.GetString(2)}/{r.GetInt32(3)}");
        }
        var records = CommittedRecords.Read(kafka, kafka.OutputTopic, TimeSpan.FromMinutes(1)).Select(record =>
        {
            using var json = System.Text.Json.JsonDocument.Parse(record.Message.Value);
            var e = json.RootElement;
            return $"{e.GetProperty("restaurant_id").GetString()}/{e.GetProperty("adv_campaign_id").GetString()}/" +
                   $"{e.GetProperty("client_id").GetString()}/{e.GetProperty("trigger_datetime_created").GetInt64()}";
        }).ToList();
        var rowSet = rows.ToHashSet();
        var recordSet = records.ToHashSet();
        return new SinkComparison(rows.Count, records.Count, rowSet.Count(x => !recordSet.Contains(x)),
            recordSet.Count(x => !rowSet.Contains(x)), records.Count - recordSet.Count);
    }
}
