using System.Globalization;

namespace PromoStream;

internal sealed class UsageException(string message) : Exception(message);

internal enum Mode { Help, Process, Produce, Demo, Dev, Broker, InitDb, Bench, RedriveDlq }

/// <summary>The parsed command line: one mode and its options, each checked against the flags that mode takes.</summary>
internal sealed class CommandLine
{
    private static readonly Dictionary<string, Mode> Modes = new()
    {
        ["--help"] = Mode.Help, ["-h"] = Mode.Help, ["--process"] = Mode.Process, ["--produce"] = Mode.Produce,
        ["--demo"] = Mode.Demo, ["--dev"] = Mode.Dev, ["--broker"] = Mode.Broker, ["--init-db"] = Mode.InitDb, ["--bench"] = Mode.Bench,
        ["--redrive-dlq"] = Mode.RedriveDlq,
    };

    /// <summary>Flags that take a value, and the modes they belong to.</summary>
    private static readonly Dictionary<string, Mode[]> ValueFlags = new()
    {
        ["--config"] = [Mode.Process, Mode.Produce, Mode.Broker, Mode.InitDb, Mode.RedriveDlq],
        ["--stop-when-idle"] = [Mode.Process],
        ["--broker-file"] = [Mode.Broker],
        ["--partitions"] = [Mode.Broker, Mode.Bench],
        ["--count"] = [Mode.Produce],
        ["--rate"] = [Mode.Produce],
        ["--duplicates"] = [Mode.Produce],
        ["--malformed"] = [Mode.Produce],
        ["--expired"] = [Mode.Produce],
        ["--no-subscribers"] = [Mode.Produce],
        ["--seed"] = [Mode.Produce, Mode.Demo, Mode.Dev, Mode.Bench],
        ["--restaurants"] = [Mode.Produce, Mode.Bench],
        ["--seed-subscribers"] = [Mode.Produce],
        ["--file"] = [Mode.Produce],
        ["--expect-file"] = [Mode.Produce],
        ["--events"] = [Mode.Demo, Mode.Bench],
        ["--subscriptions"] = [Mode.Bench],
        ["--latency-seconds"] = [Mode.Bench],
        ["--scale"] = [Mode.Bench],
        ["--rounds"] = [Mode.Bench],
        ["--reason"] = [Mode.RedriveDlq],
        ["--sqlstate"] = [Mode.RedriveDlq],
        ["--since"] = [Mode.RedriveDlq],
        ["--until"] = [Mode.RedriveDlq],
    };

    private static readonly Dictionary<string, Mode[]> SwitchFlags = new()
    {
        ["--no-eos-compare"] = [Mode.Bench],
        ["--dry-run"] = [Mode.RedriveDlq],
    };

    public const string Help = """
        PromoStream: restaurant promotion campaigns from Kafka to one notification per subscriber, exactly once,
        in a Kafka topic and the PostgreSQL table subscribers_feedback.

        Usage: dotnet run -- MODE [OPTIONS]

        Modes:
          --process            run the stream processor until Ctrl+C / SIGTERM
          --produce            run the simulator: publish campaign events (and optionally seed subscribers)
          --demo               the whole pipeline on the embedded stack (no Kafka or PostgreSQL needed); exits 0
          --dev                a playground for several terminals: embedded Kafka and PostgreSQL with topics, schema and
                               sample subscribers, until Ctrl+C; prints the export lines for --process and --produce
          --broker             only the embedded Kafka, in this process, until stopped; prints its bootstrap address
                               (creates the topics of --config FILE, or the default ones without it)
          --init-db            apply schema.sql (idempotent) and exit
          --redrive-dlq        feed the DLQ's dead letters back through the pipeline once (after their cause is fixed),
                               up to the DLQ's end at start; exits 0 with a summary
          --bench              the benchmark on the embedded stack (use -c Release)
          --help               this text

        Common:
          --config FILE        configuration (default: credentials.yaml in the working directory)

        --process:
          --stop-when-idle S   commit what is in flight and exit 0 once no input arrived for S seconds

        --redrive-dlq:
          --reason TEXT        only letters whose dlq.reason contains TEXT (any case)
          --sqlstate CODE      only letters with this dlq.sqlstate (5 characters, e.g. 23514), or of this class (2, e.g. 23)
          --since TIME         only letters written to the DLQ at or after TIME (ISO 8601 such as 2025-03-01T12:00:00Z,
                               UTC when no offset is given, or Unix seconds)
          --until TIME         only letters written to the DLQ before TIME
          --dry-run            only count what would be redriven, by reason; writes nothing and commits no position
          Letters the filters leave out are passed over (this redrive's position moves past them); letters stored
          cut are never fed, only counted.

        --broker:
          --broker-file FILE   also write the bootstrap address to FILE
          --partitions N       with --config: pre-create the config's topics with N partitions (default: kafka.topic_partitions)

        --produce:
          --count N            events to publish (default 1000; 0 publishes none); with --file, at most N lines
          --rate N             events per second (default 0: as fast as possible)
          --duplicates F       fraction that repeat an earlier event (default 0.1)
          --malformed F        fraction that are not valid events (default 0.02)
          --expired F          fraction whose campaign has already ended (default 0.05)
          --no-subscribers F   fraction for restaurants without subscribers (default 0.1)
          --restaurants N      restaurants with subscribers (default 100)
          --seed N             random seed; the same seed gives the same restaurants and events (default 1)
          --seed-subscribers N first insert N rows into subscribers_restaurants over --restaurants restaurants
          --file FILE          publish each line of FILE as one message, byte for byte (no decoding; \r, a byte
                               order mark and invalid UTF-8 are kept; an empty line is an empty message; the \n
                               ending a line is not sent) instead of generated events
          --expect-file FILE   write restaurant_id,adv_campaign_id of each distinct campaign that was active when
                               sent (its first copy); it gives output if its restaurant has subscribers

        --demo:
          --events N           events to generate (default 3000)
          --seed N             random seed (default 1)

        --dev:
          --seed N             seed of the sample subscribers; use the same with --produce (default 1)

        --bench:
          --events N           input events (default 200000)
          --restaurants N      restaurants (default 5000)
          --subscriptions N    subscription rows (default 50000)
          --latency-seconds S  length of each 1,000 events/s latency run (default 20; up to three runs)
          --rounds N           rounds of pipeline and baselines; medians are reported (default 5)
          --scale N            also run N times the events and report both (default 1: off)
          --partitions N       input topic partitions (default 64)
          --seed N             random seed (default 1)
          --no-eos-compare     skip the run with transactions off

        Exit codes: 0 done, 1 a service failed or is unreachable, 2 bad usage or configuration, 3 fenced or fatal Kafka error.
        """;

    public const string UsageHint = "run with --help for usage";

    public Mode Mode { get; private init; }
    private readonly Dictionary<string, string> _values = new();
    private readonly HashSet<string> _switches = new();

    public static CommandLine Parse(string[] args)
    {
        var modeFlags = args.Where(Modes.ContainsKey).Distinct().ToList();
        if (modeFlags.Count == 0)
        {
            var unknown = args.FirstOrDefault(a => !ValueFlags.ContainsKey(a) && !SwitchFlags.ContainsKey(a));
            throw new UsageException(unknown is not null ? Unknown(unknown)
                : "no mode given (one of --process, --produce, --demo, --dev, --broker, --init-db, --bench, --redrive-dlq, --help)");
        }
        if (modeFlags.Count > 1) throw new UsageException($"choose one mode, not {string.Join(" and ", modeFlags)}");
        var cli = new CommandLine { Mode = Modes[modeFlags[0]] };
        for (var i = 0; i < args.Length; i++)
        {
            var flag = args[i];
            if (Modes.ContainsKey(flag)) continue;
            if (ValueFlags.TryGetValue(flag, out var modes))
            {
                CheckMode(flag, modes, cli.Mode);
                if (i + 1 >= args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal))
                    throw new UsageException($"{flag} needs a value");
                cli._values[flag] = args[++i];
            }
            else if (SwitchFlags.TryGetValue(flag, out modes))
            {
                CheckMode(flag, modes, cli.Mode);
                cli._switches.Add(flag);
            }
            else throw new UsageException(Unknown(flag));
        }
        return cli;
    }

    /// <summary>Names the unknown word, and the flag it most likely meant ("process" → --process).</summary>
    private static string Unknown(string word)
    {
        var what = word.StartsWith('-') ? "unknown option" : "unexpected argument";
        var bare = word.TrimStart('-').ToLowerInvariant();
        var flags = Modes.Keys.Concat(ValueFlags.Keys).Concat(SwitchFlags.Keys).ToList();
        var closest = flags.Select(f => (Flag: f, Distance: EditDistance(bare, f.TrimStart('-')))).MinBy(c => c.Distance);
        if (closest.Distance <= Math.Max(1, bare.Length / 4)) return $"{what} '{word}'; did you mean {closest.Flag}?";
        // The first part of a longer flag ("--redrive" for --redrive-dlq) is as clear a hint, when only one flag has it.
        var longer = flags.Where(f => bare.Length >= 4 && f.TrimStart('-').StartsWith(bare, StringComparison.Ordinal)).ToList();
        return longer.Count == 1 ? $"{what} '{word}'; did you mean {longer[0]}?" : $"{what} '{word}'";
    }

    private static int EditDistance(string a, string b)
    {
        var row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (var i = 1; i <= a.Length; i++)
        {
            var diagonal = row[0];
            row[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }
        return row[b.Length];
    }

    private static void CheckMode(string flag, Mode[] modes, Mode mode)
    {
        if (mode != Mode.Help && !modes.Contains(mode))
            throw new UsageException($"{flag} does not apply to {Modes.First(m => m.Value == mode).Key}");
    }

    /// <summary>--config FILE, or null: then credentials.yaml in the working directory, or the environment alone.</summary>
    public string? ConfigPath => _values.GetValueOrDefault("--config");
    public bool Has(string flag) => _values.ContainsKey(flag) || _switches.Contains(flag);
    public string? String(string flag) => _values.GetValueOrDefault(flag);

    public int Int(string flag, int fallback, int min = 0, int max = int.MaxValue)
    {
        if (!_values.TryGetValue(flag, out var text)) return fallback;
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < min || n > max)
            throw new UsageException($"{flag} must be a whole number from {min} to {max}, got '{text}'");
        return n;
    }

    /// <summary>An instant: ISO 8601 (UTC when it names no offset) or Unix seconds; null when the flag is absent.</summary>
    public DateTimeOffset? Time(string flag)
    {
        if (!_values.TryGetValue(flag, out var text)) return null;
        // Digits alone are Unix seconds; a short number ("2025") is more likely a year than a moment in 1970.
        if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds))
            return seconds is >= 100_000_000 and <= 253_402_300_799 ? DateTimeOffset.FromUnixTimeSeconds(seconds)
                : throw new UsageException($"{flag} must be a time, ISO 8601 (2025-03-01T12:00:00Z) or Unix seconds (at least 9 digits), got '{text}'");
        if (DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var time))
            return time;
        throw new UsageException($"{flag} must be a time, ISO 8601 (2025-03-01T12:00:00Z) or Unix seconds, got '{text}'");
    }

    public double Fraction(string flag, double fallback)
    {
        if (!_values.TryGetValue(flag, out var text)) return fallback;
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) || f is < 0 or > 1 || double.IsNaN(f))
            throw new UsageException($"{flag} must be a fraction from 0 to 1, got '{text}'");
        return f;
    }
}
