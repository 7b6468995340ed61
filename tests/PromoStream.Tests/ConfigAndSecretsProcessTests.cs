using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>
/// Issue "Config and secrets", brief "a bad config names the key and exits 2": the real executable, every mode that
/// reads a config file, each kind of configuration and command-line mistake.
/// </summary>
public sealed class ConfigErrorProcessTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan ExitWithin = TimeSpan.FromSeconds(60);
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("promostream-config-");

    /// <summary>Every mode that reads a config file, with the arguments that make it read FILE.</summary>
    private static readonly string[][] ConfigModes = [["--process"], ["--init-db"], ["--produce", "--count", "5"], ["--broker"]];

    /// <summary>
    /// A complete config whose services are closed local ports with 2 s waits: a mistake that went unnoticed would end
    /// in exit 1 after those waits, not in exit 2, so the exit code tells them apart.
    /// </summary>
    internal static string ValidYaml(int kafkaPort = 1, int postgresPort = 1) => $"""
        kafka:
          bootstrap_servers: "127.0.0.1:{kafkaPort}"
          input_topic: "in"
          output_topic: "out"
          dlq_topic: "dlq"
          group_id: "g"
          transactional_id: "t"
          connect_timeout_seconds: 2
        postgres:
          connection_string: "Host=127.0.0.1;Port={postgresPort};Database=de;Username=u"
          connect_timeout_seconds: 2
        processing:
          batch_max_events: 100
        """;

    private string Write(string name, string yaml)
    {
        var path = Path.Combine(_dir.FullName, name);
        File.WriteAllText(path, yaml);
        return path;
    }

    private (int Exit, string Output) Run(IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        using var process = new PromoStreamProcess(args, env, _dir.FullName);
        var exit = process.WaitForExit(ExitWithin);
        return (exit, process.Output);
    }

    /// <summary>Runs every config-reading mode on the file and checks exit 2 and that the message says all of `named`.</summary>
    private void EveryModeRejects(string file, string[] named, IDictionary<string, string>? env = null)
    {
        foreach (var mode in ConfigModes)
        {
            var (exit, text) = Run([.. mode, "--config", file], env);
            output.WriteLine($"{string.Join(' ', mode)}: exit {exit}: {text}");
            Assert.True(exit == 2, $"{mode[0]} exited {exit}, expected 2:\n{text}");
            foreach (var n in named) Assert.True(text.Contains(n, StringComparison.Ordinal), $"{mode[0]}: the message does not name '{n}':\n{text}");
        }
    }

    public static TheoryData<string, string, int> MalformedYaml => new()
    {
        // name, file text, line of the mistake
        { "mapping inside a plain value", "kafka:\n  bootstrap_servers: \"127.0.0.1:1\"\n  input_topic: in: put\n  output_topic: \"out\"\n", 3 },
        { "unterminated quoted value", "kafka:\n  bootstrap_servers: \"127.0.0.1:1\"\n  input_topic: \"in\n  output_topic: out\n", 3 },
        { "bad indentation", "kafka:\n  bootstrap_servers: \"127.0.0.1:1\"\n  input_topic: \"in\"\n   output_topic: x: y\n", 4 },
    };

    [Theory]
    [MemberData(nameof(MalformedYaml))]
    public void MalformedYamlExitsTwoNamingTheFileAndLine(string name, string yaml, int line)
    {
        var file = Write($"malformed-{name.Replace(' ', '-')}.yaml", yaml);
        EveryModeRejects(file, [file, "malformed YAML", $"line {line}"]);
    }

    [Fact]
    public void TabIndentationIsReportedAtItsLine()
    {
        // YAML forbids tabs in indentation; the mistake is on line 3, and the message must send the user there.
        var file = Write("tab.yaml", "kafka:\n  bootstrap_servers: \"127.0.0.1:1\"\n\tinput_topic: \"in\"\n");
        EveryModeRejects(file, [file, "line 3"]);
    }

    [Theory]
    [InlineData("kafka", "bogus_key: 1", "kafka.bogus_key")]
    [InlineData("postgres", "password: \"x\"", "postgres.password")]
    [InlineData("processing", "batch_size: 10", "processing.batch_size")]
    public void UnknownKeyExitsTwoNamingTheKey(string section, string line, string key)
    {
        var lines = ValidYaml().Split('\n').ToList();
        lines.Insert(lines.IndexOf($"{section}:") + 1, $"  {line}");
        var yaml = string.Join('\n', lines);
        EveryModeRejects(Write("unknown-key.yaml", yaml), [key]);
    }

    [Fact]
    public void UnknownSectionAndUnknownEnvironmentVariableAreNamed()
    {
        EveryModeRejects(Write("unknown-section.yaml", ValidYaml() + "\nmonitoring:\n  port: 9090\n"), ["monitoring"]);
        EveryModeRejects(Write("ok.yaml", ValidYaml()), ["PROMOSTREAM__KAFKA__BOGUS_KEY"],
            new Dictionary<string, string> { ["PROMOSTREAM__KAFKA__BOGUS_KEY"] = "1" });
    }

    [Theory]
    [InlineData("processing", "batch_max_events", "many")]
    [InlineData("processing", "transactions", "maybe")]
    [InlineData("kafka", "create_topics", "3")]
    [InlineData("kafka", "topic_partitions", "[1, 2]")]
    [InlineData("kafka", "session_timeout_ms", "{a: 1}")]
    [InlineData("postgres", "connect_timeout_seconds", "2.5")]
    [InlineData("processing", "batch_max_events", "0")]
    [InlineData("kafka", "security_protocol", "tls")]
    [InlineData("kafka", "input_topic", "\"bad topic!\"")]
    public void WrongTypeOrValueExitsTwoNamingTheKey(string section, string key, string value)
    {
        // Every other occurrence of the key goes (YAML forbids repeating it), then the bad value goes under its section.
        var lines = ValidYaml().Split('\n').Where(l => !l.TrimStart().StartsWith(key + ":", StringComparison.Ordinal)).ToList();
        lines.Insert(lines.IndexOf($"{section}:") + 1, $"  {key}: {value}");
        var yaml = string.Join('\n', lines);
        EveryModeRejects(Write("wrong-type.yaml", yaml), [$"{section}.{key}"]);
    }

    [Fact]
    public void WrongTypeFromTheEnvironmentIsNamed()
    {
        EveryModeRejects(Write("ok.yaml", ValidYaml()), ["processing.batch_max_ms"],
            new Dictionary<string, string> { ["PROMOSTREAM__PROCESSING__BATCH_MAX_MS"] = "abc" });
    }

    [Fact]
    public void MissingRequiredKeyIsNamed()
    {
        var yaml = string.Join('\n', ValidYaml().Split('\n').Where(l => !l.Contains("group_id", StringComparison.Ordinal)));
        EveryModeRejects(Write("no-group.yaml", yaml), ["kafka.group_id"]);
    }

    [Fact]
    public void MissingConfigFileExitsTwoNamingThePath()
    {
        var missing = Path.Combine(_dir.FullName, "no-such-dir", "promostream.yaml");
        EveryModeRejects(missing, [missing]);
        // Without --config: credentials.yaml in the working directory, which holds none.
        foreach (var mode in new[] { "--process", "--init-db", "--produce" })
        {
            var (exit, text) = Run([mode]);
            Assert.True(exit == 2, $"{mode} exited {exit}:\n{text}");
            Assert.Contains("credentials.yaml", text);
        }
    }

    public static TheoryData<string[], string> BadFlags => new()
    {
        { ["--process", "--stop-when-idle", "abc"], "--stop-when-idle" },
        { ["--process", "--stop-when-idle", "0"], "--stop-when-idle" },
        { ["--process", "--stop-when-idle", "-3"], "--stop-when-idle" },
        { ["--process", "--stop-when-idle"], "--stop-when-idle" },
        { ["--produce", "--rate", "-5"], "--rate" },
        { ["--produce", "--count", "many"], "--count" },
        { ["--produce", "--duplicates", "1.5"], "--duplicates" },
        { ["--produce", "--malformed", "NaN"], "--malformed" },
        { ["--broker", "--config", "credentials.yaml", "--partitions", "0"], "--partitions" },
        { ["--demo", "--events", "abc"], "--events" },
        { ["--bench", "--scale", "99"], "--scale" },
        { ["--process", "--bogus"], "--bogus" },
        { ["--produce", "--count", "5", "extra"], "extra" },
        { ["--broker", "--count", "5"], "--count" },
        { ["--init-db", "--stop-when-idle", "3"], "--stop-when-idle" },
        { ["--process", "--produce"], "--produce" },
        { ["--redrive-dlq", "--sqlstate", "2351"], "--sqlstate" },
        { ["--redrive-dlq", "--since", "soon"], "--since" },
        { ["--process", "--dry-run"], "--dry-run" },
    };

    [Theory]
    [MemberData(nameof(BadFlags))]
    public void BadFlagExitsTwoNamingTheFlag(string[] args, string named)
    {
        Write("credentials.yaml", ValidYaml()); // a usable config, so that the flag is the only mistake
        var clock = Stopwatch.StartNew();
        var (exit, text) = Run(args);
        output.WriteLine($"{string.Join(' ', args)}: exit {exit} after {clock.Elapsed.TotalSeconds:0.0}s: {text}");
        Assert.True(exit == 2, $"exit {exit}, expected 2:\n{text}");
        Assert.Contains(named, text);
        Assert.Contains("--help", text); // where to look next
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), "a usage error must not wait for services");
    }

    [Fact]
    public void NoModeOrAnUnknownOneExitsTwoListingTheModes()
    {
        foreach (var args in new[] { Array.Empty<string>(), ["--bogus"], ["--config", "x.yaml"] })
        {
            var (exit, text) = Run(args);
            output.WriteLine($"{string.Join(' ', args)}: exit {exit}: {text}");
            Assert.True(exit == 2, $"'{string.Join(' ', args)}' exited {exit}:\n{text}");
            Assert.Contains("--help", text);
        }
        var (_, bogus) = Run(["--bogus"]);
        Assert.True(bogus.Contains("--bogus", StringComparison.Ordinal) || bogus.Contains("--process", StringComparison.Ordinal),
            "the message neither names the unknown flag nor lists the modes:\n" + bogus);
    }

    [Fact]
    public void HelpExitsZeroAndListsEveryModeAndFlag()
    {
        foreach (var flag in new[] { "--help", "-h" })
        {
            var (exit, text) = Run([flag]);
            Assert.Equal(0, exit);
            string[] modes = ["--process", "--produce", "--demo", "--dev", "--broker", "--init-db", "--bench", "--redrive-dlq", "--help"];
            string[] flags = ["--config", "--stop-when-idle", "--broker-file", "--partitions", "--count", "--rate", "--duplicates",
                "--malformed", "--expired", "--no-subscribers", "--restaurants", "--seed", "--seed-subscribers", "--file", "--expect-file",
                "--events", "--subscriptions", "--latency-seconds", "--scale", "--no-eos-compare", "--reason", "--sqlstate", "--since", "--until",
                "--dry-run"];
            foreach (var name in modes.Concat(flags)) Assert.True(text.Contains(name, StringComparison.Ordinal), $"{flag} does not list {name}");
            Assert.Contains("Exit codes", text);
        }
    }

    public void Dispose() => _dir.Delete(recursive: true);
}

/// <summary>Brief "secrets never reach logs": a known password in every place a secret goes, through every config-reading mode.</summary>
[Collection(Stack.Name)]
public sealed class SecretsProcessTests(ITestOutputHelper output) : IDisposable
{
    private const string Password = "Xq7-S3cr3t-Pw!";
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("promostream-secrets-");

    private sealed record Case(string Name, string[] Args, string Yaml, Dictionary<string, string>? Env, int? Exit, string? Names);

    private static string Yaml(string bootstrap, string? connectionString, bool saslPasswordInFile = true) => $"""
        kafka:
          bootstrap_servers: "{bootstrap}"
          input_topic: "in"
          output_topic: "out"
          dlq_topic: "dlq"
          group_id: "g"
          transactional_id: "t"
          security_protocol: "sasl_plaintext"
          sasl_mechanism: "SCRAM-SHA-512"
          sasl_username: "promostream"
        {(saslPasswordInFile ? $"  sasl_password: \"{Password}\"" : "")}
          connect_timeout_seconds: 2
          create_topics: false
        postgres:
        {(connectionString is null ? "" : $"  connection_string: \"{connectionString}\"")}
          connect_timeout_seconds: 2
        """;

    [Fact]
    public void APasswordInTheConfigOrTheEnvironmentNeverReachesTheOutputOfAnyMode()
    {
        var pgPort = EmbeddedPostgres.FreePort();
        var kafkaPort = EmbeddedPostgres.FreePort();
        var closedPg = $"Host=127.0.0.1;Port={pgPort};Database=de;Username=promostream;Password={Password}";
        var db = PostgresServer.NewDatabase() + $";Password={Password}"; // trust authentication ignores it; the string still holds it
        var closedKafka = $"127.0.0.1:{kafkaPort}";
        var pgWhere = $"127.0.0.1:{pgPort}";
        using var embedded = EmbeddedKafka.Start(); // reachable, but it speaks no SASL
        Case[] cases =
        [
            new("process, PostgreSQL unreachable", ["--process"], Yaml(closedKafka, closedPg), null, 1, pgWhere),
            new("process, Kafka unreachable", ["--process"], Yaml(closedKafka, db), null, 1, closedKafka),
            new("process, secrets from the environment", ["--process"], Yaml(closedKafka, null, saslPasswordInFile: false),
                new() { ["PROMOSTREAM__KAFKA__SASL_PASSWORD"] = Password, ["PROMOSTREAM__POSTGRES__CONNECTION_STRING"] = db }, 1, closedKafka),
            new("process, Kafka refuses SASL", ["--process"], Yaml(embedded.BootstrapServers, db), null, 1, embedded.BootstrapServers),
            new("init-db, PostgreSQL unreachable", ["--init-db"], Yaml(closedKafka, closedPg), null, 1, pgWhere),
            new("redrive-dlq, Kafka unreachable", ["--redrive-dlq", "--dry-run"], Yaml(closedKafka, closedPg), null, 1, closedKafka),
            new("produce --seed-subscribers, PostgreSQL unreachable", ["--produce", "--seed-subscribers", "10", "--count", "0"],
                Yaml(closedKafka, closedPg), null, 1, pgWhere),
            new("produce --count 5, Kafka unreachable", ["--produce", "--count", "5"], Yaml(closedKafka, closedPg), null, 1, closedKafka),
            new("produce, secret from the environment", ["--produce", "--count", "5"], Yaml(closedKafka, closedPg, saslPasswordInFile: false),
                new() { ["PROMOSTREAM__KAFKA__SASL_PASSWORD"] = Password }, 1, closedKafka),
            new("broker", ["--broker"], Yaml(closedKafka, closedPg), null, null, null),
            new("config error in the connection string", ["--process"], Yaml(closedKafka, closedPg + ";Colour=blue"), null, 2, "postgres.connection_string"),
            new("malformed YAML on the password's line", ["--process"],
                Yaml(closedKafka, closedPg).Replace($"\"{Password}\"", $"\"{Password}\n  x: [1"), null, 2, "line"),
            new("misspelt environment variable", ["--init-db"], Yaml(closedKafka, closedPg),
                new() { ["PROMOSTREAM__KAFKA__SASL_PASWORD"] = Password }, 2, "PROMOSTREAM__KAFKA__SASL_PASWORD"),
        ];

        var leaks = new List<string>();
        var problems = new List<string>();
        foreach (var (c, i) in cases.Select((c, i) => (c, i)))
        {
            var file = Path.Combine(_dir.FullName, $"case{i}.yaml");
            File.WriteAllText(file, c.Yaml);
            var clock = Stopwatch.StartNew();
            using var process = new PromoStreamProcess([.. c.Args, "--config", file], c.Env, _dir.FullName);
            int exit;
            if (c.Name == "broker")
            {
                process.WaitForLine(l => l.StartsWith("bootstrap:", StringComparison.Ordinal), TimeSpan.FromSeconds(30), "the broker's address");
                process.Signal(Posix.SIGTERM);
                exit = process.WaitForExit(TimeSpan.FromSeconds(20));
                if (exit != 0) problems.Add($"{c.Name}: exit {exit} after SIGTERM");
            }
            else
            {
                exit = process.WaitForExit(TimeSpan.FromSeconds(90));
                if (exit != c.Exit) problems.Add($"{c.Name}: exit {exit}, expected {c.Exit}:\n{process.Tail(10)}");
                if (c.Names is { } where && !process.Output.Contains(where, StringComparison.Ordinal))
                    problems.Add($"{c.Name}: the output does not name {where}:\n{process.Tail(10)}");
            }
            var text = process.Output;
            output.WriteLine($"--- {c.Name}: exit {exit} after {clock.Elapsed.TotalSeconds:0.0}s\n{text}");
            // The whole password, and its most distinctive part in case it was cut or escaped.
            if (text.Contains(Password, StringComparison.Ordinal) || text.Contains("S3cr3t", StringComparison.OrdinalIgnoreCase))
                leaks.Add($"{c.Name}:\n{string.Join("\n", process.Lines.Where(l => l.Contains("S3cr3t", StringComparison.OrdinalIgnoreCase)))}");
        }
        Figure.Report(output, $"secrets: modes={cases.Length} leaks={leaks.Count}");
        Assert.True(leaks.Count == 0, "password in the output of:\n" + string.Join("\n", leaks));
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }


    public void Dispose() => _dir.Delete(recursive: true);
}
