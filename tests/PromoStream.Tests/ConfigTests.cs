using Xunit;

namespace PromoStream.Tests;

public class ConfigTests
{
    private const string Valid = """
        kafka:
          bootstrap_servers: "localhost:9092"
          input_topic: "restaurant-promotions"
          output_topic: "subscriber-notifications"
          dlq_topic: "restaurant-promotions-dlq"
          group_id: "promo-stream"
          transactional_id: "promo-stream-1"
        postgres:
          connection_string: "Host=localhost;Port=5432;Database=de;Username=u;Password=p"
        """;

    private static Settings Load(string yaml, Dictionary<string, string?>? env = null)
    {
        var values = Settings.ReadYaml(yaml, "test.yaml");
        Settings.ApplyEnvironment(values, env ?? new());
        return Settings.FromValues(values);
    }

    [Fact]
    public void ValidFileGetsDefaultsForEveryOtherKey()
    {
        var s = Load(Valid);
        Assert.Null(s.Kafka.GroupInstanceId);
        Assert.Equal(5000, s.Processing.BatchMaxEvents);
        Assert.Equal(100, s.Processing.BatchMaxMs);
        Assert.Equal(30, s.Processing.SubscribersRefreshSeconds);
        Assert.True(s.Kafka.CreateTopics);
        Assert.True(s.Processing.Transactions);
        Assert.Equal(50, s.Kafka.FetchWaitMaxMs);
        Assert.Equal(new MetricsSettings(Port: 0, Bind: "0.0.0.0", ReadyMaxHoldSeconds: 30, StuckAfterSeconds: 120), s.Metrics);
    }

    [Theory]
    [InlineData("bootstrap_servers")]
    [InlineData("input_topic")]
    [InlineData("group_id")]
    public void MissingRequiredKeyIsNamed(string key)
    {
        var yaml = string.Join("\n", Valid.Split('\n').Where(l => !l.TrimStart().StartsWith(key + ":")));
        var e = Assert.Throws<ConfigException>(() => Load(yaml));
        Assert.Contains($"kafka.{key}", e.Message);
    }

    [Theory]
    [InlineData("processing:\n  batch_max_events: many", "processing.batch_max_events")]
    [InlineData("processing:\n  batch_max_events: 0", "processing.batch_max_events")]
    [InlineData("processing:\n  transactions: maybe", "processing.transactions")]
    [InlineData("processing:\n  batch_size: 10", "processing.batch_size")]
    [InlineData("processing:\n  subscribers_refresh_seconds: [1, 2]", "processing.subscribers_refresh_seconds")]
    [InlineData("monitoring:\n  port: 1", "monitoring")]
    [InlineData("metrics:\n  port: 70000", "metrics.port")]
    [InlineData("metrics:\n  bind: localhost", "metrics.bind")]
    public void WrongTypeOrUnknownKeyIsNamed(string extra, string named)
    {
        var e = Assert.Throws<ConfigException>(() => Load(Valid + "\n" + extra));
        Assert.Contains(named, e.Message);
    }

    [Fact]
    public void TheFetchWaitIsReadAndBounded()
    {
        string With(string wait) => Valid.Replace("  transactional_id: \"promo-stream-1\"", $"  transactional_id: \"promo-stream-1\"\n  fetch_wait_max_ms: {wait}");
        Assert.Equal(10, Load(With("10")).Kafka.FetchWaitMaxMs);
        Assert.Contains("kafka.fetch_wait_max_ms", Assert.Throws<ConfigException>(() => Load(With("0"))).Message);
    }

    [Fact]
    public void InvalidTopicNameIsNamed()
    {
        var e = Assert.Throws<ConfigException>(() => Load(Valid.Replace("\"restaurant-promotions\"", "\"bad topic!\"")));
        Assert.Contains("kafka.input_topic", e.Message);
    }

    [Fact]
    public void MalformedYamlSaysWhere()
    {
        var e = Assert.Throws<ConfigException>(() => Load("kafka:\n  bootstrap_servers: [unclosed\n"));
        Assert.Contains("malformed YAML", e.Message);
        Assert.Contains("line", e.Message);
    }

    [Fact]
    public void MissingFileSaysWhichFile()
    {
        var e = Assert.Throws<ConfigException>(() => Settings.Load("/nonexistent/credentials.yaml", new Dictionary<string, string?>()));
        Assert.Contains("/nonexistent/credentials.yaml", e.Message);
    }

    [Fact]
    public void EnvironmentOverridesTheFile()
    {
        var s = Load(Valid, new()
        {
            ["PROMOSTREAM__KAFKA__INPUT_TOPIC"] = "from-env", ["PROMOSTREAM__PROCESSING__BATCH_MAX_MS"] = "250", ["PROMOSTREAM__METRICS__PORT"] = "9464",
        });
        Assert.Equal("from-env", s.Kafka.InputTopic);
        Assert.Equal(250, s.Processing.BatchMaxMs);
        Assert.Equal(9464, s.Metrics.Port);
    }

    [Fact]
    public void AWrongValueSaysWhetherItCameFromTheFileOrWhichEnvironmentVariable()
    {
        var file = Path.Combine(Path.GetTempPath(), $"config-{Guid.NewGuid():N}.yaml");
        try
        {
            File.WriteAllText(file, Valid + "\nprocessing:\n  batch_max_ms: soon");
            var fromFile = Assert.Throws<ConfigException>(() => Settings.Load(file, new Dictionary<string, string?>()));
            Assert.Contains($"processing.batch_max_ms' (from {file})", fromFile.Message);
            File.WriteAllText(file, Valid);
            var fromEnv = Assert.Throws<ConfigException>(() => Settings.Load(file, new Dictionary<string, string?> { ["PROMOSTREAM__PROCESSING__BATCH_MAX_MS"] = "soon" }));
            Assert.Contains("(from environment variable PROMOSTREAM__PROCESSING__BATCH_MAX_MS)", fromEnv.Message);
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public void WithoutAConfigFileTheEnvironmentAloneIsEnoughAndAMissingFileNamedExplicitlyIsAnError()
    {
        var env = new Dictionary<string, string?>
        {
            ["PROMOSTREAM__KAFKA__BOOTSTRAP_SERVERS"] = "127.0.0.1:9092", ["PROMOSTREAM__KAFKA__INPUT_TOPIC"] = "in",
            ["PROMOSTREAM__KAFKA__OUTPUT_TOPIC"] = "out", ["PROMOSTREAM__KAFKA__DLQ_TOPIC"] = "dlq", ["PROMOSTREAM__KAFKA__GROUP_ID"] = "g",
            ["PROMOSTREAM__KAFKA__TRANSACTIONAL_ID"] = "t", ["PROMOSTREAM__POSTGRES__CONNECTION_STRING"] = "Host=127.0.0.1;Database=x",
        };
        Assert.False(File.Exists(Settings.DefaultPath)); // the test runs where there is no credentials.yaml
        Assert.Equal("in", Settings.Load(null, env).Kafka.InputTopic);
        Assert.Contains("--dev", Assert.Throws<ConfigException>(() => Settings.Load(null, new Dictionary<string, string?>())).Message);
        Assert.Throws<ConfigException>(() => Settings.Load("no-such.yaml", env));
    }

    [Fact]
    public void EnvironmentVariableForNoKeyIsNamed()
    {
        var e = Assert.Throws<ConfigException>(() => Load(Valid, new() { ["PROMOSTREAM__KAFKA__PASWORD"] = "x" }));
        Assert.Contains("PROMOSTREAM__KAFKA__PASWORD", e.Message);
    }

    [Fact]
    public void SaslNeedsCredentialsAndNeverEchoesThePassword()
    {
        var yaml = Valid.Replace("  group_id:", "  security_protocol: sasl_ssl\n  sasl_username: u\n  group_id:");
        var missing = Assert.Throws<ConfigException>(() => Load(yaml));
        Assert.Contains("kafka.sasl_password", missing.Message);
        var bad = Assert.Throws<ConfigException>(() => Load(yaml + "\nprocessing:\n  batch_max_ms: x", new() { ["PROMOSTREAM__KAFKA__SASL_PASSWORD"] = "s3cr3t-Pa55" }));
        Assert.DoesNotContain("s3cr3t-Pa55", bad.Message);
    }

    [Fact]
    public void ConnectionStringDescriptionHasNoPassword()
    {
        var s = Load(Valid.Replace("Password=p", "Password=s3cr3t-Pa55"));
        Assert.Equal("localhost:5432/de", s.Postgres.Describe());
        Assert.DoesNotContain("s3cr3t", s.Postgres.Describe());
    }

    [Fact]
    public void ExampleFileIsAValidConfigListingEveryKey()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "credentials.yaml.example");
        var text = File.ReadAllText(path);
        var values = Settings.ReadYaml(text, path);
        Settings.FromValues(values);
        foreach (var key in Settings.Keys.Keys) Assert.Contains(key.Split('.')[1] + ":", text);
    }
}
