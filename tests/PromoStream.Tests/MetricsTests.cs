using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Confluent.Kafka;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>/metrics, /healthz and /readyz of a running processor, read as Prometheus and Kubernetes read them.</summary>
[Collection(Stack.Name)]
public class MetricsTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Minute = TimeSpan.FromMinutes(1);

    [Fact]
    public void EventsByOutcomeAndConsumerLagAreExactOnTheMetricsEndpoint()
    {
        using var scenario = new Scenario(partitions: 4);
        PipelineTests.InsertContractSample(scenario.Database); // 8 distinct clients for PipelineTests.Restaurant
        var input = new List<(string Key, byte[] Value)>();
        for (var i = 0; i < 20; i++) input.Add(($"k{i}", Text.Utf8(Campaign(i))));
        for (var i = 0; i < 5; i++) input.Add(($"d{i}", Text.Utf8(Campaign(i))));
        for (var i = 0; i < 3; i++) input.Add(($"e{i}", Text.Utf8(Campaign(100 + i, ended: true))));
        string[] malformed = ["{\"restaurant_id\":", "not json", "{}", "[1,2]"];
        input.AddRange(malformed.Select((bad, i) => ($"m{i}", Text.Utf8(bad))));
        Publish(scenario.Settings, input);

        var port = EmbeddedPostgres.FreePort();
        var processor = scenario.Processor(environment: new Dictionary<string, string> { ["PROMOSTREAM__METRICS__PORT"] = port.ToString() });
        Scrape? metrics = null;
        Eventually.True(() => (metrics = TryScrape(port)) is { } m && m.Sum("promostream_events_total") == input.Count, Minute,
            "every event counted on /metrics:\n" + processor.Tail());
        Eventually.True(() => (metrics = TryScrape(port)) is { } m && m.Series("promostream_consumer_lag").Count == 4
                              && m.Series("promostream_consumer_lag").All(s => s.Value == 0) && m.Value("promostream_ledger_campaigns") == 20,
            TimeSpan.FromSeconds(20), "lag 0 on the 4 partitions and the ledger's size");
        Assert.Equal(20, metrics!.Value("promostream_events_total", ("outcome", "notified")));
        Assert.Equal(0, metrics.Value("promostream_events_total", ("outcome", "replayed")));
        Assert.Equal(5, metrics.Value("promostream_events_total", ("outcome", "duplicate")));
        Assert.Equal(3, metrics.Value("promostream_events_total", ("outcome", "expired")));
        Assert.Equal(4, metrics.Value("promostream_events_total", ("outcome", "dead_lettered"), ("reason", "invalid")));
        Assert.Equal(160, metrics.Value("promostream_notifications_total", ("sink", "postgres")));
        Assert.Equal(160, metrics.Value("promostream_notifications_total", ("sink", "kafka")));
        Assert.Equal(20, metrics.Value("promostream_end_to_end_latency_seconds_count")); // one per campaign that gave notifications
        Assert.Equal(4, metrics.Value("promostream_assigned_partitions"));
        Assert.Equal(160, PostgresServer.Scalar(scenario.Database, "SELECT count(*) FROM subscribers_feedback"));

        processor.Signal(Posix.SIGTERM);
        Assert.Equal(0, processor.WaitForExit(TimeSpan.FromSeconds(15)));

        // Input published while no processor runs waits; a processor that owns the partitions but consumes nothing
        // shows exactly that much lag on each of them.
        var waiting = Publish(scenario.Settings, Enumerable.Range(200, 12).Select(i => ($"w{i}", Text.Utf8(Campaign(i)))).ToList());
        var pausedPort = EmbeddedPostgres.FreePort();
        var paused = scenario.Processor(environment: new Dictionary<string, string>
        {
            ["PROMOSTREAM__METRICS__PORT"] = pausedPort.ToString(),
            ["PROMOSTREAM_TEST_PAUSE_CONSUMING"] = "1",
        });
        Dictionary<int, double> lag = [];
        Eventually.True(() =>
        {
            if (TryScrape(pausedPort) is not { } m) return false;
            lag = m.Series("promostream_consumer_lag").ToDictionary(s => int.Parse(s.Labels["partition"], CultureInfo.InvariantCulture), s => s.Value);
            return lag.Count == 4 && Enumerable.Range(0, 4).All(p => lag[p] == waiting.GetValueOrDefault(p));
        }, Minute, $"lag equal to what waits ({Show(waiting)})\n" + paused.Tail());
        Assert.Equal(0, TryScrape(pausedPort)!.Sum("promostream_events_total"));

        Figure.Report(output, $"metrics: events_total notified=20 duplicate=5 expired=3 dead_lettered{{invalid}}=4 (of {input.Count}), " +
                              $"notifications postgres=160 kafka=160, consumer_lag 0 on 4 partitions; paused with {waiting.Values.Sum()} waiting: " +
                              $"consumer_lag {Show(lag.ToDictionary(p => p.Key, p => (int)p.Value))}");
    }

    [RealBrokerFact]
    public void ConsumerLagOnARealBrokerIsWhatWaitsPastTheGroupsCommittedOffsets()
    {
        var dir = Directory.CreateTempSubdirectory("promostream-lag-");
        try
        {
            var db = PostgresServer.NewDatabase();
            PipelineTests.InsertContractSample(db);
            var suffix = Guid.NewGuid().ToString("N")[..12];
            var config = Path.Combine(dir.FullName, "lag.yaml");
            File.WriteAllText(config, $"""
                kafka:
                  bootstrap_servers: "{Environment.GetEnvironmentVariable("PROMOSTREAM_TEST_BOOTSTRAP")}"
                  input_topic: "in-{suffix}"
                  output_topic: "out-{suffix}"
                  dlq_topic: "dlq-{suffix}"
                  group_id: "g-{suffix}"
                  transactional_id: "t-{suffix}"
                  topic_partitions: 4
                  session_timeout_ms: 6000
                postgres:
                  connection_string: "{db}"
                """);
            var settings = Settings.Load(config, new Dictionary<string, string?>());
            Kafka.EnsureTopics(settings.Kafka);
            var drained = Publish(settings, Enumerable.Range(0, 10).Select(i => ($"k{i}", Text.Utf8(Campaign(i)))).ToList());
            using (var draining = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "2"]))
                Assert.True(draining.WaitForExit(Minute) == 0, draining.Tail());

            var waiting = Publish(settings, Enumerable.Range(300, 9).Select(i => ($"w{i}", Text.Utf8(Campaign(i)))).ToList());
            var port = EmbeddedPostgres.FreePort();
            using var paused = new PromoStreamProcess(["--process", "--config", config], new Dictionary<string, string>
            {
                ["PROMOSTREAM__METRICS__PORT"] = port.ToString(),
                ["PROMOSTREAM_TEST_PAUSE_CONSUMING"] = "1",
            });
            Dictionary<int, double> lag = [];
            Eventually.True(() =>
            {
                if (TryScrape(port) is not { } m) return false;
                lag = m.Series("promostream_consumer_lag").ToDictionary(s => int.Parse(s.Labels["partition"], CultureInfo.InvariantCulture), s => s.Value);
                return lag.Count == 4 && Enumerable.Range(0, 4).All(p => lag[p] == waiting.GetValueOrDefault(p));
            }, Minute, $"lag equal to what waits ({Show(waiting)})");
            Figure.Report(output, $"consumer lag on a real broker: {drained.Values.Sum()} drained and committed, then {waiting.Values.Sum()} waiting; " +
                                  $"consumer_lag {Show(lag.ToDictionary(p => p.Key, p => (int)p.Value))}");
        }
        finally { dir.Delete(recursive: true); }
    }

    [Fact]
    public void ReadyzTurnsNotReadyWithinTenSecondsOfPostgresStoppingAndReadyAgainAfterItReturns()
    {
        using var postgres = EmbeddedPostgres.Start();
        using (var dataSource = PostgresDatabase.CreateDataSource(postgres.ConnectionString))
        using (var store = new PostgresDatabase(dataSource)) store.ApplySchema();
        PipelineTests.InsertContractSample(postgres.ConnectionString);
        using var scenario = new Scenario(database: postgres.ConnectionString);
        var port = EmbeddedPostgres.FreePort();
        var processor = scenario.Processor(environment: new Dictionary<string, string>
        {
            ["PROMOSTREAM__METRICS__PORT"] = port.ToString(),
            ["PROMOSTREAM__METRICS__READY_MAX_HOLD_SECONDS"] = "1",
        });
        Eventually.True(() => Get(port, "/readyz").Status == 200, Minute, "ready at start:\n" + processor.Tail());
        Assert.Equal(200, Get(port, "/healthz").Status);

        postgres.Stop();
        var down = Stopwatch.StartNew();
        (int Status, string Body) ready = (0, "");
        var alwaysAlive = true;
        Eventually.True(() =>
        {
            alwaysAlive &= Get(port, "/healthz").Status == 200;
            return (ready = Get(port, "/readyz")).Status == 503;
        }, TimeSpan.FromSeconds(10), "/readyz 503 within 10 s of PostgreSQL stopping");
        var notReadyAfter = down.Elapsed.TotalSeconds;
        Assert.Contains("PostgreSQL", ready.Body);
        Assert.DoesNotContain("Password", ready.Body, StringComparison.OrdinalIgnoreCase);

        // An event arriving now is held (its subscribers cannot be read); the loop retries it and stays alive.
        Publish(scenario.Settings, [("held", Text.Utf8(Campaign(1)))]);
        var held = "";
        Eventually.True(() =>
        {
            alwaysAlive &= Get(port, "/healthz").Status == 200;
            return (held = Get(port, "/readyz").Body).Contains("a batch held") && TryScrape(port) is { } m
                   && m.Value("promostream_hold_age_seconds") > 1 && m.Value("promostream_retries_total", ("class", "transient")) > 0;
        }, TimeSpan.FromSeconds(20), "the held batch on /readyz and /metrics");
        Assert.True(alwaysAlive, "/healthz left 200 while PostgreSQL was down");

        postgres.Restart();
        var back = Stopwatch.StartNew();
        Eventually.True(() => Get(port, "/readyz").Status == 200, Minute, "/readyz 200 after PostgreSQL returned:\n" + processor.Tail());
        var readyAfter = back.Elapsed.TotalSeconds;
        Eventually.True(() => TryScrape(port)?.Value("promostream_events_total", ("outcome", "notified")) == 1, Minute, "the held event notified");
        var after = TryScrape(port)!;
        Assert.Equal(0, after.Value("promostream_hold_age_seconds"));
        Assert.True(after.Value("promostream_held_seconds_total", ("class", "transient")) > 1);
        Assert.Equal(200, Get(port, "/healthz").Status);
        Figure.Report(output, $"readiness: /readyz 503 {notReadyAfter:0.0}s after PostgreSQL stopped (\"{ready.Body.Trim()}\"), then \"{held.Trim()}\"; " +
                              $"200 again {readyAfter:0.0}s after it restarted; held_seconds_total={after.Value("promostream_held_seconds_total", ("class", "transient")):0.0}; " +
                              "/healthz 200 throughout");
    }

    [PrometheusFact]
    public async Task PrometheusScrapesTheNotifiedCount()
    {
        var db = PostgresServer.NewDatabase();
        PipelineTests.InsertContractSample(db);
        using var kafka = EmbeddedKafka.Start();
        var port = EmbeddedPostgres.FreePort();
        var settings = EmbeddedStack.CreateSettings(kafka, db, partitions: 2, prefix: "scraped",
            overrides: new Dictionary<string, string> { ["metrics.port"] = port.ToString(), ["metrics.bind"] = "127.0.0.1" });
        Publish(settings, Enumerable.Range(0, 7).Select(i => ($"k{i}", Text.Utf8(Campaign(i)))).ToList());
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var processing = Task.Run(() => Processor.Run(settings, stopWhenIdleSeconds: null, stop.Token));
        var dir = Directory.CreateTempSubdirectory("promostream-prometheus-");
        Process? prometheus = null;
        try
        {
            Eventually.True(() => processing.IsCompleted || TryScrape(port)?.Value("promostream_events_total", ("outcome", "notified")) == 7,
                Minute, "7 notified on /metrics");
            Assert.False(processing.IsCompleted, "the processor stopped early");

            var config = Path.Combine(dir.FullName, "prometheus.yml");
            File.WriteAllText(config, $$"""
                global:
                  scrape_interval: 1s
                scrape_configs:
                  - job_name: promostream
                    static_configs:
                      - targets: ["127.0.0.1:{{port}}"]
                """);
            var web = EmbeddedPostgres.FreePort();
            var start = new ProcessStartInfo(PrometheusFactAttribute.Binary!)
            {
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
                ArgumentList = { $"--config.file={config}", $"--storage.tsdb.path={Path.Combine(dir.FullName, "data")}", $"--web.listen-address=127.0.0.1:{web}" },
            };
            prometheus = Process.Start(start)!;
            prometheus.OutputDataReceived += (_, _) => { };
            prometheus.ErrorDataReceived += (_, _) => { };
            prometheus.BeginOutputReadLine();
            prometheus.BeginErrorReadLine();
            var clock = Stopwatch.StartNew();
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            var query = $"http://127.0.0.1:{web}/api/v1/query?query={Uri.EscapeDataString("promostream_events_total{outcome=\"notified\"}")}";
            string? seen = null;
            var server = prometheus;
            Eventually.True(() => server.HasExited || (seen = QueryValue(http, query)) == "7", Minute, "Prometheus reads 7");
            Assert.False(prometheus.HasExited, "prometheus exited");
            Figure.Report(output, $"prometheus: promostream_events_total{{outcome=\"notified\"}} = {seen} through Prometheus's query API " +
                                  $"{clock.Elapsed.TotalSeconds:0.0}s after it started (scrape_interval 1s)");
        }
        finally
        {
            if (prometheus is { HasExited: false }) { prometheus.Kill(entireProcessTree: true); prometheus.WaitForExit(); }
            prometheus?.Dispose();
            await stop.CancelAsync();
            await processing;
            dir.Delete(recursive: true);
        }
    }

    private static string? QueryValue(HttpClient http, string query)
    {
        try
        {
            using var json = JsonDocument.Parse(http.GetStringAsync(query).GetAwaiter().GetResult());
            var result = json.RootElement.GetProperty("data").GetProperty("result");
            return result.GetArrayLength() == 1 ? result[0].GetProperty("value")[1].GetString() : null;
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or JsonException) { return null; }
    }

    /// <summary>An event of the contract's sample restaurant: campaign n, active now unless it ended.</summary>
    private static string Campaign(int n, bool ended = false) =>
        PipelineTests.SampleEvent.Replace("426614174003", $"4266141{n:D5}").Replace("2659207116", ended ? "1659207116" : "2659207116");

    /// <summary>Publishes and returns how many records went to each partition.</summary>
    private static Dictionary<int, int> Publish(Settings s, List<(string Key, byte[] Value)> events)
    {
        using var producer = new ProducerBuilder<string, byte[]>(new ProducerConfig(Kafka.Client(s.Kafka))).Build();
        var byPartition = new Dictionary<int, int>();
        foreach (var (key, value) in events)
        {
            var delivered = producer.ProduceAsync(s.Kafka.InputTopic, new Message<string, byte[]> { Key = key, Value = value }).GetAwaiter().GetResult();
            byPartition[delivered.Partition.Value] = byPartition.GetValueOrDefault(delivered.Partition.Value) + 1;
        }
        return byPartition;
    }

    private static string Show(Dictionary<int, int> byPartition) =>
        string.Join(" ", byPartition.OrderBy(p => p.Key).Select(p => $"p{p.Key}={p.Value}"));

    private static (int Status, string Body) Get(int port, string path)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        try
        {
            using var response = http.GetAsync($"http://127.0.0.1:{port}{path}").GetAwaiter().GetResult();
            return ((int)response.StatusCode, response.Content.ReadAsStringAsync().GetAwaiter().GetResult());
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { return (0, e.Message); }
    }

    private static Scrape? TryScrape(int port) => Get(port, "/metrics") is (200, var body) ? Scrape.Parse(body) : null;

    /// <summary>The series of one scrape in Prometheus's text format.</summary>
    private sealed record Scrape(List<(string Name, Dictionary<string, string> Labels, double Value)> All)
    {
        public static Scrape Parse(string text)
        {
            var all = new List<(string, Dictionary<string, string>, double)>();
            foreach (var line in text.Split('\n'))
            {
                if (line.Length == 0 || line.StartsWith('#')) continue;
                var space = line.LastIndexOf(' ');
                var series = line[..space];
                var value = double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
                var brace = series.IndexOf('{');
                var labels = new Dictionary<string, string>();
                if (brace >= 0)
                    foreach (var pair in series[(brace + 1)..^1].Split("\",").Where(p => p.Length > 0))
                    {
                        var eq = pair.IndexOf('=');
                        labels[pair[..eq]] = pair[(eq + 1)..].Trim('"');
                    }
                all.Add((brace >= 0 ? series[..brace] : series, labels, value));
            }
            return new Scrape(all);
        }

        public List<(string Name, Dictionary<string, string> Labels, double Value)> Series(string name) => All.Where(s => s.Name == name).ToList();

        public double Sum(string name) => Series(name).Sum(s => s.Value);

        public double? Value(string name, params (string Key, string Value)[] labels)
        {
            var match = Series(name).Where(s => s.Labels.Count == labels.Length && labels.All(l => s.Labels.GetValueOrDefault(l.Key) == l.Value)).ToList();
            return match.Count == 1 ? match[0].Value : null;
        }
    }
}

/// <summary>A check that needs Prometheus's server (Debian package `prometheus`); skipped with the reason where it is absent.</summary>
public sealed class PrometheusFactAttribute : FactAttribute
{
    public static readonly string? Binary = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
        .Select(dir => Path.Combine(dir, "prometheus")).FirstOrDefault(File.Exists);

    public PrometheusFactAttribute()
    {
        if (Binary is null) Skip = "prometheus not installed: `apt-get install -y prometheus` (Debian's package) to run the scrape check";
    }
}
