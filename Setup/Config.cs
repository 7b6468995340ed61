using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace PromoStream;

/// <summary>A configuration problem the user must fix; the message names the key and never its secret value.</summary>
internal sealed class ConfigException(string message) : Exception(message);

internal sealed record KafkaSettings(
    string BootstrapServers, string InputTopic, string OutputTopic, string DlqTopic,
    string GroupId, string TransactionalId, string? GroupInstanceId,
    string SecurityProtocol, string? SaslMechanism, string? SaslUsername, string? SaslPassword, string? SslCaLocation,
    bool CreateTopics, int TopicPartitions, short ReplicationFactor, string AutoOffsetReset,
    int SessionTimeoutMs, int TransactionTimeoutMs, int ConnectTimeoutSeconds, int MaxMessageBytes, int FetchWaitMaxMs,
    long PartitionCapacityBytes = 0);

internal sealed record PostgresSettings(string ConnectionString, int ConnectTimeoutSeconds)
{
    /// <summary>Where the database is, for messages: host, port and database, never the password.</summary>
    public string Describe() => DescribeConnectionString(ConnectionString);

    public static string DescribeConnectionString(string connectionString)
    {
        var b = new Npgsql.NpgsqlConnectionStringBuilder(connectionString);
        return $"{b.Host}:{b.Port}/{b.Database}";
    }
}

internal sealed record ProcessingSettings(
    int BatchMaxEvents, int BatchMaxMs, int SubscribersRefreshSeconds,
    int StatsIntervalSeconds, int RetryBackoffMaxMs, bool Transactions);

/// <summary>The HTTP endpoint for /metrics, /healthz and /readyz (docs/ops-metrics.md); Port 0 = no endpoint.</summary>
internal sealed record MetricsSettings(int Port, string Bind, int ReadyMaxHoldSeconds, int StuckAfterSeconds)
{
    public static readonly MetricsSettings Off = new(0, "0.0.0.0", 30, 120);
}

internal sealed record Settings(KafkaSettings Kafka, PostgresSettings Postgres, ProcessingSettings Processing, MetricsSettings Metrics)
{
    public const string EnvPrefix = "PROMOSTREAM__";

    /// <summary>logging.format: text or json lines on stderr.</summary>
    public LogFormat LogFormat { get; init; } = LogFormat.Text;

    /// <summary>Every key the file may hold, with its default (null: required).</summary>
    public static readonly IReadOnlyDictionary<string, string?> Keys = new Dictionary<string, string?>
    {
        ["kafka.bootstrap_servers"] = null,
        ["kafka.input_topic"] = null,
        ["kafka.output_topic"] = null,
        ["kafka.dlq_topic"] = null,
        ["kafka.group_id"] = null,
        ["kafka.transactional_id"] = "",
        ["kafka.group_instance_id"] = "",
        ["kafka.security_protocol"] = "plaintext",
        ["kafka.sasl_mechanism"] = "SCRAM-SHA-512",
        ["kafka.sasl_username"] = "",
        ["kafka.sasl_password"] = "",
        ["kafka.ssl_ca_location"] = "",
        ["kafka.create_topics"] = "true",
        ["kafka.topic_partitions"] = "6",
        ["kafka.replication_factor"] = "-1",
        ["kafka.auto_offset_reset"] = "earliest",
        ["kafka.session_timeout_ms"] = "45000",
        ["kafka.transaction_timeout_ms"] = "60000",
        ["kafka.connect_timeout_seconds"] = "30",
        ["kafka.max_message_bytes"] = "4194304",
        ["kafka.fetch_wait_max_ms"] = "50",
        ["kafka.partition_capacity_bytes"] = "0",
        ["postgres.connection_string"] = null,
        ["postgres.connect_timeout_seconds"] = "30",
        ["processing.batch_max_events"] = "5000",
        ["processing.batch_max_ms"] = "100",
        ["processing.subscribers_refresh_seconds"] = "30",
        ["processing.stats_interval_seconds"] = "5",
        ["processing.retry_backoff_max_ms"] = "10000",
        ["processing.transactions"] = "true",
        ["metrics.port"] = "0",
        ["metrics.bind"] = "0.0.0.0",
        ["metrics.ready_max_hold_seconds"] = "30",
        ["metrics.stuck_after_seconds"] = "120",
        ["logging.format"] = "text",
    };

    /// <summary>Keys of earlier versions that mean nothing now: accepted with a warning, so an upgrade does not stop on them.</summary>
    public static readonly IReadOnlyDictionary<string, string> Obsolete = new Dictionary<string, string>
    {
        ["kafka.dedup_topic"] = "the dedup changelog is gone: the ledger table in PostgreSQL decides duplicates; the old topic can be deleted",
        ["processing.dedup_window_seconds"] = "duplicates are now dropped for a campaign's whole life (the ledger table in PostgreSQL)",
    };

    public const string DefaultPath = "credentials.yaml";

    private static IEnumerable<string> Sections => Keys.Keys.Select(k => k[..k.IndexOf('.')]).Distinct();

    /// <summary>
    /// The file named by --config; without one, credentials.yaml in the working directory, or, where there is none,
    /// the PROMOSTREAM__SECTION__KEY environment variables alone (as `--dev` prints them).
    /// </summary>
    public static Settings Load(string? path, IDictionary<string, string?>? environment = null)
    {
        environment ??= ReadProcessEnvironment();
        var file = path ?? DefaultPath;
        Dictionary<string, string> values;
        if (File.Exists(file)) values = ReadYaml(File.ReadAllText(file), file);
        else if (path is null && environment.Keys.Any(k => k.StartsWith(EnvPrefix, StringComparison.OrdinalIgnoreCase))) values = [];
        else
            throw new ConfigException($"config file not found: {file} (copy credentials.yaml.example to credentials.yaml, pass --config FILE, " +
                                      $"or set {EnvPrefix}SECTION__KEY variables, as `dotnet run -- --dev` prints them)");
        var origins = values.Keys.ToDictionary(k => k, _ => file);
        ApplyEnvironment(values, environment, origins);
        return FromValues(values, origins);
    }

    /// <summary>Reads `section: {key: scalar}` into "section.key" entries, rejecting anything else by name.</summary>
    public static Dictionary<string, string> ReadYaml(string text, string source)
    {
        var stream = new YamlStream();
        try { stream.Load(new StringReader(text)); }
        catch (YamlException e)
        {
            // YamlDotNet places a tab-indentation error at 1:1 or on the line before; the tab's own line is the useful one.
            if (LineIndentedWithTab(text) is { } tabLine)
                throw new ConfigException($"{source}: malformed YAML at line {tabLine}: a tab is used for indentation (YAML needs spaces)");
            throw new ConfigException($"{source}: malformed YAML at line {e.Start.Line}, column {e.Start.Column}: {FirstLine(e.Message)}");
        }
        var values = new Dictionary<string, string>();
        if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is YamlScalarNode { Value: null or "" })
            return values;
        if (stream.Documents[0].RootNode is not YamlMappingNode root)
            throw new ConfigException($"{source}: the top level must be a mapping of sections ({string.Join(", ", Sections)})");
        foreach (var (sectionNode, body) in root.Children)
        {
            var section = ((YamlScalarNode)sectionNode).Value ?? "";
            if (!Keys.Keys.Any(k => k.StartsWith(section + ".", StringComparison.Ordinal)))
                throw new ConfigException($"{source}: unknown section '{section}' (known: {string.Join(", ", Sections)})");
            if (body is YamlScalarNode { Value: null or "" }) continue;
            if (body is not YamlMappingNode mapping)
                throw new ConfigException($"{source}: section '{section}' must be a mapping of keys");
            foreach (var (keyNode, valueNode) in mapping.Children)
            {
                var key = $"{section}.{((YamlScalarNode)keyNode).Value}";
                if (Obsolete.TryGetValue(key, out var why)) { Log.Warn($"{source}: key '{key}' is ignored: {why}"); continue; }
                if (!Keys.ContainsKey(key)) throw new ConfigException($"{source}: unknown key '{key}'");
                if (valueNode is not YamlScalarNode scalar)
                    throw new ConfigException($"{source}: key '{key}' must be a single value, not a list or mapping");
                if (scalar.Value is null || (scalar.Value == "" && scalar.Style == YamlDotNet.Core.ScalarStyle.Plain)) continue;
                values[key] = scalar.Value;
            }
        }
        return values;
    }

    private static string FirstLine(string s) => s.Split('\n')[0].Trim();

    private static int? LineIndentedWithTab(string text)
    {
        var lines = text.Split('\n');
        for (var i = 0; i < lines.Length; i++)
            if (lines[i].TakeWhile(char.IsWhiteSpace).Contains('\t')) return i + 1;
        return null;
    }

    private static Dictionary<string, string?> ReadProcessEnvironment()
    {
        var env = new Dictionary<string, string?>();
        foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables())
            env[(string)e.Key] = (string?)e.Value;
        return env;
    }

    /// <summary>PROMOSTREAM__SECTION__KEY overrides section.key, so that secrets need not sit in the file.</summary>
    /// <param name="origins">Where each value came from, for error messages: the file, or the variable's name.</param>
    public static void ApplyEnvironment(Dictionary<string, string> values, IDictionary<string, string?> environment,
        Dictionary<string, string>? origins = null)
    {
        foreach (var (name, value) in environment)
        {
            if (!name.StartsWith(EnvPrefix, StringComparison.OrdinalIgnoreCase) || value is null) continue;
            var parts = name[EnvPrefix.Length..].Split("__");
            var key = parts.Length == 2 ? $"{parts[0].ToLowerInvariant()}.{parts[1].ToLowerInvariant()}" : "";
            if (Obsolete.TryGetValue(key, out var why)) { Log.Warn($"environment variable {name} is ignored: {why}"); continue; }
            if (!Keys.ContainsKey(key))
                throw new ConfigException($"environment variable {name} names no config key (expected {EnvPrefix}SECTION__KEY, e.g. {EnvPrefix}KAFKA__SASL_PASSWORD)");
            values[key] = value;
            if (origins is not null) origins[key] = $"environment variable {name}";
        }
    }

    public static Settings FromValues(IReadOnlyDictionary<string, string> values, IReadOnlyDictionary<string, string>? origins = null)
    {
        var read = new KeyReader(values, origins ?? new Dictionary<string, string>());
        var groupId = read.String("kafka.group_id");
        var kafka = new KafkaSettings(
            BootstrapServers: read.String("kafka.bootstrap_servers"),
            InputTopic: read.TopicName("kafka.input_topic"),
            OutputTopic: read.TopicName("kafka.output_topic"),
            DlqTopic: read.TopicName("kafka.dlq_topic"),
            GroupId: groupId,
            TransactionalId: read.Optional("kafka.transactional_id") is { } transactionalId ? WithHostname(transactionalId) : "",
            GroupInstanceId: read.Optional("kafka.group_instance_id") is { } instance ? WithHostname(instance) : null,
            SecurityProtocol: read.OneOf("kafka.security_protocol", "plaintext", "ssl", "sasl_plaintext", "sasl_ssl"),
            SaslMechanism: read.OneOf("kafka.sasl_mechanism", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
            SaslUsername: read.Optional("kafka.sasl_username"),
            SaslPassword: read.Optional("kafka.sasl_password"),
            SslCaLocation: read.Optional("kafka.ssl_ca_location"),
            CreateTopics: read.Bool("kafka.create_topics"),
            TopicPartitions: read.Int("kafka.topic_partitions", 1, 10_000),
            ReplicationFactor: (short)read.Int("kafka.replication_factor", -1, 100),
            AutoOffsetReset: read.OneOf("kafka.auto_offset_reset", "earliest", "latest"),
            SessionTimeoutMs: read.Int("kafka.session_timeout_ms", 1000, 3_600_000),
            TransactionTimeoutMs: read.Int("kafka.transaction_timeout_ms", 1000, 900_000),
            ConnectTimeoutSeconds: read.Int("kafka.connect_timeout_seconds", 1, 3600),
            MaxMessageBytes: read.Int("kafka.max_message_bytes", 1_000_000, 100_000_000),
            FetchWaitMaxMs: read.Int("kafka.fetch_wait_max_ms", 1, 10_000),
            PartitionCapacityBytes: read.Int("kafka.partition_capacity_bytes", 0, int.MaxValue));
        if (kafka.SecurityProtocol.StartsWith("sasl", StringComparison.Ordinal) && (kafka.SaslUsername is null || kafka.SaslPassword is null))
            throw new ConfigException("kafka.sasl_username and kafka.sasl_password are required when kafka.security_protocol is " + kafka.SecurityProtocol);
        if (kafka.ReplicationFactor == 0) throw new ConfigException("kafka.replication_factor must be -1 (broker default) or at least 1");

        var postgres = new PostgresSettings(read.ConnectionString("postgres.connection_string"),
            read.Int("postgres.connect_timeout_seconds", 1, 3600));
        var processing = new ProcessingSettings(
            BatchMaxEvents: read.Int("processing.batch_max_events", 1, 1_000_000),
            BatchMaxMs: read.Int("processing.batch_max_ms", 1, 60_000),
            SubscribersRefreshSeconds: read.Int("processing.subscribers_refresh_seconds", 0, 86400),
            StatsIntervalSeconds: read.Int("processing.stats_interval_seconds", 1, 3600),
            RetryBackoffMaxMs: read.Int("processing.retry_backoff_max_ms", 10, 600_000),
            Transactions: read.Bool("processing.transactions"));
        var metrics = new MetricsSettings(
            Port: read.Int("metrics.port", 0, 65535),
            Bind: read.IpAddress("metrics.bind"),
            ReadyMaxHoldSeconds: read.Int("metrics.ready_max_hold_seconds", 1, 86400),
            StuckAfterSeconds: read.Int("metrics.stuck_after_seconds", 5, 86400));
        return new Settings(kafka, postgres, processing, metrics) { LogFormat = ParseLogFormat(read.OneOf("logging.format", "text", "json")) };
    }

    private static LogFormat ParseLogFormat(string value) => value.Equals("json", StringComparison.OrdinalIgnoreCase) ? LogFormat.Json : LogFormat.Text;

    /// <summary>
    /// logging.format from PROMOSTREAM__LOGGING__FORMAT alone, read before anything is logged: the config file is read
    /// later (its own lines come before its logging.format is known), and --demo, --dev and --bench read none.
    /// </summary>
    public static LogFormat LogFormatFromEnvironment(IDictionary<string, string?>? environment = null)
    {
        const string variable = EnvPrefix + "LOGGING__FORMAT";
        var value = (environment ?? ReadProcessEnvironment())
            .FirstOrDefault(e => e.Key.Equals(variable, StringComparison.OrdinalIgnoreCase) && e.Value is not null).Value;
        if (value is null) return LogFormat.Text;
        var read = new KeyReader(new Dictionary<string, string> { ["logging.format"] = value },
            new Dictionary<string, string> { ["logging.format"] = $"environment variable {variable}" });
        return ParseLogFormat(read.OneOf("logging.format", "text", "json"));
    }

    /// <summary>"{hostname}" in an id becomes this machine's name: one config file, a distinct stable id per host or pod.</summary>
    private static string WithHostname(string id) => id.Replace("{hostname}", InstanceSlot.Hostname, StringComparison.Ordinal);

    private sealed class KeyReader(IReadOnlyDictionary<string, string> values, IReadOnlyDictionary<string, string> origins)
    {
        /// <summary>"key 'x' (from credentials.yaml)" or "(from environment variable PROMOSTREAM__…)": where to fix it.</summary>
        private string Named(string key) => origins.TryGetValue(key, out var origin) ? $"key '{key}' (from {origin})" : $"key '{key}'";

        private string? Raw(string key) => values.TryGetValue(key, out var v) ? v : Keys[key];

        public string String(string key)
        {
            var value = Raw(key) ?? throw new ConfigException($"missing required key '{key}'");
            if (value.Length == 0 && Keys[key] is null) throw new ConfigException($"{Named(key)} must not be empty");
            return value;
        }

        public string? Optional(string key) => String(key) is { Length: > 0 } v ? v : null;

        public string TopicName(string key)
        {
            var name = String(key);
            if (name.Length > 249 || name is "." or ".." || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
                throw new ConfigException($"{Named(key)} is not a valid Kafka topic name (letters, digits, '.', '_', '-'; at most 249)");
            return name;
        }

        public int Int(string key, int min, int max)
        {
            var text = String(key);
            if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n))
                throw new ConfigException($"{Named(key)} must be an integer, got '{text}'");
            if (n < min || n > max) throw new ConfigException($"{Named(key)} must be between {min} and {max}, got {n}");
            return n;
        }

        public string IpAddress(string key)
        {
            var text = String(key);
            if (!System.Net.IPAddress.TryParse(text, out _))
                throw new ConfigException($"{Named(key)} must be an IP address to listen on (0.0.0.0: every interface, 127.0.0.1: this machine only), got '{text}'");
            return text;
        }

        public bool Bool(string key) => String(key).ToLowerInvariant() switch
        {
            "true" or "yes" or "on" => true,
            "false" or "no" or "off" => false,
            var other => throw new ConfigException($"{Named(key)} must be true or false, got '{other}'"),
        };

        public string OneOf(string key, params string[] allowed)
        {
            var value = String(key);
            return allowed.FirstOrDefault(a => a.Equals(value, StringComparison.OrdinalIgnoreCase))
                ?? throw new ConfigException($"{Named(key)} must be one of {string.Join(", ", allowed)}, got '{value}'");
        }

        public string ConnectionString(string key)
        {
            var value = String(key);
            try
            {
                var b = new Npgsql.NpgsqlConnectionStringBuilder(value);
                if (string.IsNullOrEmpty(b.Host)) throw new ConfigException($"{Named(key)} has no Host");
            }
            catch (ArgumentException e)
            {
                // The builder's message names the bad keyword, never a value, so it is safe to show.
                throw new ConfigException($"{Named(key)} is not a valid PostgreSQL connection string: {FirstLine(e.Message)}");
            }
            return value;
        }
    }
}
