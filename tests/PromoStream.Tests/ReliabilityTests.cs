using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>The damage done for real: processes killed, databases stopped, brokers cut off, instances added.</summary>
[Collection(Stack.Name)]
public class ReliabilityTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Minute = TimeSpan.FromMinutes(1);

    private static bool IsAssigned(string line) => line.Contains("assigned partitions [", StringComparison.Ordinal) && !line.Contains("[]");

    [Fact]
    public async Task SigkillAtRandomMomentsLosesNothingAndDuplicatesNothing()
    {
        using var scenario = new Scenario();
        var workload = scenario.Workload(count: 2500, rate: 40);
        scenario.SeedSubscribers(workload);
        var publishing = scenario.PublishInBackground(workload);
        var random = new Random(7);
        var kills = 0;
        var clock = Stopwatch.StartNew();
        while (kills < 10)
        {
            var processor = scenario.Processor();
            // Anywhere from start-up (connecting, joining, restoring dedup state) to mid-stream.
            var lifetime = TimeSpan.FromMilliseconds(random.Next(300, 9000));
            Eventually.True(() => processor.HasExited || clock.Elapsed > lifetime, Minute, "the moment to kill");
            Assert.False(processor.HasExited, "processor exited by itself:\n" + processor.Tail());
            processor.Signal(Posix.SIGKILL);
            processor.WaitForExit(TimeSpan.FromSeconds(10));
            kills++;
            clock.Restart();
        }
        var report = await publishing;
        var last = scenario.Processor(stopWhenIdle: 4);
        Assert.Equal(0, last.WaitForExit(TimeSpan.FromMinutes(3)));

        var rows = RowComparison.Of(scenario.Database, report);
        Figure.Report(output, $"crash: kills={kills} events={report.Published} {rows}");
        Assert.True(rows.Exact, rows.ToString());
        Assert.True(rows.Expected > 1000, "the workload must produce real output");
    }

    [Fact]
    public async Task SigtermCommitsOrAbortsTheBatchLeavesTheGroupAndExitsZeroWithinTenSeconds()
    {
        using var scenario = new Scenario();
        var workload = scenario.Workload(count: 3000, rate: 300);
        scenario.SeedSubscribers(workload);
        var processor = scenario.Processor();
        processor.WaitForLine(IsAssigned, Minute, "partition assignment");
        var publishing = scenario.PublishInBackground(workload);
        processor.WaitForLine(l => l.Contains("stats consumed=") && !l.Contains("consumed=0 "), Minute, "processing under way");
        var clock = Stopwatch.StartNew();
        processor.Signal(Posix.SIGTERM);
        var exit = processor.WaitForExit(TimeSpan.FromSeconds(10));
        var stopSeconds = clock.Elapsed.TotalSeconds;
        Assert.Equal(0, exit);
        Assert.Contains(processor.Lines, l => l.StartsWith("final consumed=", StringComparison.Ordinal));

        // What it committed before stopping plus what a successor does after it is exactly the expected output.
        var report = await publishing;
        var successor = scenario.Processor(stopWhenIdle: 3);
        Assert.Equal(0, successor.WaitForExit(TimeSpan.FromMinutes(2)));
        var rows = RowComparison.Of(scenario.Database, report);
        Figure.Report(output, $"graceful stop: exit=0 after {stopSeconds:0.0}s; then {rows}");
        Assert.True(rows.Exact, rows.ToString());
    }

    [Fact]
    public async Task PostgresOutageMidStreamWarnsOnceRetriesAndEndsExact()
    {
        using var postgres = EmbeddedPostgres.Start();
        var db = postgres.ConnectionString;
        using (var dataSource = PostgresDatabase.CreateDataSource(db))
        using (var store = new PostgresDatabase(dataSource)) store.ApplySchema();
        using var scenario = new Scenario(database: db);
        var workload = scenario.Workload(count: 3000, rate: 100);
        scenario.SeedSubscribers(workload);
        var processor = scenario.Processor(stopWhenIdle: 4);
        processor.WaitForLine(IsAssigned, Minute, "partition assignment");
        var publishing = scenario.PublishInBackground(workload);
        processor.WaitForLine(l => l.Contains("stats consumed=") && !l.Contains("consumed=0 "), Minute, "processing under way");

        postgres.Stop();
        Thread.Sleep(TimeSpan.FromSeconds(15)); // the outage itself: its length is the scenario, not a wait for a result
        var outageLines = processor.Lines.Count;
        postgres.Restart();
        var back = Stopwatch.StartNew();
        processor.WaitForLine(l => l.Contains("PostgreSQL is reachable again"), Minute, "recovery");
        var recovery = back.Elapsed.TotalSeconds;

        var report = await publishing;
        Assert.Equal(0, processor.WaitForExit(TimeSpan.FromMinutes(2)));
        var warnings = processor.Lines.Take(outageLines).Count(l => l.Contains("WARN") && l.Contains("PostgreSQL"));
        var rows = RowComparison.Of(db, report);
        Figure.Report(output, $"postgres outage: 15s, warnings={warnings}, recovered {recovery:0.0}s after restart; {rows}");
        Assert.True(warnings == 1, $"{warnings} PostgreSQL warnings:\n{processor.Tail(60)}");
        Assert.True(rows.Exact, $"{rows}\n{processor.Tail(60)}");
        Assert.DoesNotContain(processor.Lines, l => l.Contains("ERROR"));
    }

    [Fact]
    public void UnreachablePostgresAtStartFailsAfterTheBoundedWaitNamingHostAndPortNotThePassword()
    {
        var port = EmbeddedPostgres.FreePort();
        using var scenario = new Scenario(extraYaml: "");
        File.WriteAllText(scenario.ConfigFile, File.ReadAllText(scenario.ConfigFile)
            .Replace(scenario.Database, $"Host=127.0.0.1;Port={port};Database=de;Username=u;Password=Sup3r-S3cret")
            .Replace("connect_timeout_seconds: 10\nprocessing", "connect_timeout_seconds: 2\nprocessing"));
        var clock = Stopwatch.StartNew();
        var processor = scenario.Processor();
        var exit = processor.WaitForExit(TimeSpan.FromSeconds(30));
        Figure.Report(output, $"postgres refused at start: exit={exit} after {clock.Elapsed.TotalSeconds:0.0}s");
        Assert.Equal(1, exit);
        Assert.Contains($"127.0.0.1:{port}", processor.Output);
        Assert.Contains("PostgreSQL", processor.Output);
        Assert.DoesNotContain("Sup3r-S3cret", processor.Output);
    }

    [Fact]
    public void UnreachableKafkaAtStartFailsAfterTheBoundedWaitNamingTheBootstrapServers()
    {
        var port = EmbeddedPostgres.FreePort();
        var db = PostgresServer.NewDatabase();
        var dir = Directory.CreateTempSubdirectory("promostream-kafka-down-");
        try
        {
            var config = Path.Combine(dir.FullName, "c.yaml");
            File.WriteAllText(config, $"""
                kafka:
                  bootstrap_servers: "127.0.0.1:{port}"
                  input_topic: "in"
                  output_topic: "out"
                  dlq_topic: "dlq"
                  group_id: "g"
                  transactional_id: "t"
                  security_protocol: "sasl_plaintext"
                  sasl_username: "promostream"
                  sasl_password: "Kafka-S3cret-Pw"
                  connect_timeout_seconds: 3
                postgres:
                  connection_string: "{db}"
                """);
            var clock = Stopwatch.StartNew();
            using var processor = new PromoStreamProcess(["--process", "--config", config]);
            var exit = processor.WaitForExit(TimeSpan.FromSeconds(30));
            Figure.Report(output, $"kafka unreachable at start: exit={exit} after {clock.Elapsed.TotalSeconds:0.0}s");
            Assert.Equal(1, exit);
            Assert.Contains($"cannot reach Kafka at 127.0.0.1:{port}", processor.Output);
            Assert.Contains($"waiting for Kafka at 127.0.0.1:{port}", processor.Output);
            Assert.DoesNotContain("Kafka-S3cret-Pw", processor.Output);
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public async Task BrokerGoneMidStreamAndBackEndsExact()
    {
        var db = PostgresServer.NewDatabase();
        using var kafka = EmbeddedKafka.Start();
        var settings = EmbeddedStack.CreateSettings(kafka, db, partitions: 4, prefix: "outage",
            new Dictionary<string, string> { ["processing.retry_backoff_max_ms"] = "1000", ["kafka.transaction_timeout_ms"] = "10000" });
        var workload = new SimulatorOptions(1500, 100, 0.1, 0.02, 0.05, 0.1, 3, 30, 240, null, null);
        using (var dataSource = PostgresDatabase.CreateDataSource(db)) Simulator.SeedSubscribers(dataSource, workload);
        // Published while the processor runs, so that the outage falls on batches in flight.
        var publishing = Task.Run(() => Simulator.Publish(settings.Kafka, Simulator.Generate(workload, DateTimeOffset.UtcNow.ToUnixTimeSeconds()),
            workload.Count, workload.Rate, CancellationToken.None));

        // The processor ends by itself once every input partition is committed to its end (--stop-when-idle): rows in
        // PostgreSQL alone would not say that the Kafka side has recovered too.
        using var stop = new CancellationTokenSource();
        var running = Task.Run(() => PromoStream.Processor.Run(settings, stopWhenIdleSeconds: 3, stop.Token));
        Eventually.True(() => PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback") > 0, Minute, "first rows");
        var outage = System.Diagnostics.Stopwatch.StartNew();
        kafka.SetBrokerDown(1);
        Thread.Sleep(TimeSpan.FromSeconds(8)); // the outage itself
        kafka.SetBrokerUp(1);
        try
        {
            Assert.False(running.IsCompleted, "the processor must still be running when the broker comes back");
            var report = await publishing;
            var stats = await running.WaitAsync(TimeSpan.FromMinutes(3)); // a processor that never recovers fails here instead of hanging the suite
            var rows = RowComparison.Of(db, report);
            Figure.Report(output, $"broker outage: 8s mid-stream, drained and idle-stopped {outage.Elapsed.TotalSeconds:0}s after it began; " +
                                  $"aborts={stats.Aborts}; {rows}");
            Assert.True(rows.Exact, rows.ToString());
        }
        finally
        {
            stop.Cancel();
        }
    }

    [Fact]
    public async Task ASecondInstanceJoiningAndLeavingMidStreamStillEndsExact()
    {
        using var scenario = new Scenario(partitions: 6);
        var workload = scenario.Workload(count: 3000, rate: 100);
        scenario.SeedSubscribers(workload);
        var first = scenario.Processor("instance-a", stopWhenIdle: 5);
        first.WaitForLine(IsAssigned, Minute, "first instance assigned");
        var publishing = scenario.PublishInBackground(workload);
        Thread.Sleep(TimeSpan.FromSeconds(5)); // let the stream run before the second instance joins
        var second = scenario.Processor("instance-b");
        second.WaitForLine(IsAssigned, Minute, "second instance assigned");
        Eventually.True(() => second.Lines.Any(l => l.Contains("stats consumed=") && !l.Contains("consumed=0 ")), Minute, "second instance processing");
        second.Signal(Posix.SIGTERM);
        Assert.Equal(0, second.WaitForExit(TimeSpan.FromSeconds(15)));
        var report = await publishing;
        Assert.Equal(0, first.WaitForExit(TimeSpan.FromMinutes(3)));

        var rebalances = first.Lines.Count(l => l.Contains("assigned partitions ["));
        var rows = RowComparison.Of(scenario.Database, report);
        Figure.Report(output, $"scale-out: 2 instances, first saw {rebalances} assignments; {rows}");
        Assert.True(rebalances >= 2, "the first instance must have been rebalanced:\n" + first.Tail());
        Assert.True(rows.Exact, $"{rows}\nfirst:\n{first.Tail(40)}\nsecond:\n{second.Tail(20)}");
    }

    [RealBrokerFact]
    public void TheOlderOfTwoInstancesWithOneTransactionalIdIsFencedAndSaysSo()
    {
        var bootstrap = Environment.GetEnvironmentVariable("PROMOSTREAM_TEST_BOOTSTRAP")!;
        var db = PostgresServer.NewDatabase();
        var dir = Directory.CreateTempSubdirectory("promostream-fence-");
        try
        {
            var config = Path.Combine(dir.FullName, "c.yaml");
            var suffix = Guid.NewGuid().ToString("N")[..8];
            File.WriteAllText(config, $"""
                kafka:
                  bootstrap_servers: "{bootstrap}"
                  input_topic: "fence-in-{suffix}"
                  output_topic: "fence-out-{suffix}"
                  dlq_topic: "fence-dlq-{suffix}"
                  group_id: "fence-{suffix}"
                  transactional_id: "fence-{suffix}"
                postgres:
                  connection_string: "{db}"
                """);
            using var older = new PromoStreamProcess(["--process", "--config", config]);
            older.WaitForLine(IsAssigned, Minute, "older assigned");
            using var newer = new PromoStreamProcess(["--process", "--config", config]);
            newer.WaitForLine(l => l.Contains("processing "), Minute, "newer started");
            var settings = Settings.Load(config, new Dictionary<string, string?>());
            PipelineTests.Publish(settings, (PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent)));
            Assert.Equal(3, older.WaitForExit(Minute));
            Assert.Contains("fenced", older.Output);
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void FencedErrorsAreFatalAndTheMessageSaysSo()
    {
        var fenced = new Confluent.Kafka.KafkaException(new Confluent.Kafka.Error(Confluent.Kafka.ErrorCode.ProducerFenced, "fenced by epoch"));
        Assert.True(PromoStream.Failures.IsFatal(fenced));
        Assert.Contains("fenced: another instance took over transactional id 'promo-1'", PromoStream.Failures.FatalMessage(fenced, "promo-1"));
        var timeout = new Confluent.Kafka.KafkaException(new Confluent.Kafka.Error(Confluent.Kafka.ErrorCode.Local_TimedOut, "timed out"));
        Assert.False(PromoStream.Failures.IsFatal(timeout));
    }

}
