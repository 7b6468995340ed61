using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Confluent.Kafka;
using Npgsql;
using NpgsqlTypes;

namespace PromoStream;

internal sealed record SimulatorOptions(
    int Count, int Rate, double Duplicates, double Malformed, double Expired, double NoSubscribers,
    int Seed, int Restaurants, int SeedSubscribers, string? File, string? ExpectFile, int? FileCount = null,
    IReadOnlyList<string>? SubscribedRestaurants = null)
{
    public static SimulatorOptions From(CommandLine cli) => new(
        Count: cli.Int("--count", 1000),
        Rate: cli.Int("--rate", 0),
        Duplicates: cli.Fraction("--duplicates", 0.1),
        Malformed: cli.Fraction("--malformed", 0.02),
        Expired: cli.Fraction("--expired", 0.05),
        NoSubscribers: cli.Fraction("--no-subscribers", 0.1),
        Seed: cli.Int("--seed", 1),
        Restaurants: cli.Int("--restaurants", 100, 1),
        SeedSubscribers: cli.Int("--seed-subscribers", 0),
        File: cli.String("--file"),
        ExpectFile: cli.String("--expect-file"),
        FileCount: cli.Has("--count") ? cli.Int("--count", 1000) : null);
}

internal enum EventKind { Valid, Duplicate, Malformed, Expired }

internal readonly record struct SimulatedEvent(byte[] Key, byte[] Value, EventKind Kind, Campaign? Campaign);

/// <summary>
/// Realistic input, reproducible from a seed: restaurant ids depend only on (seed, index), so subscribers seeded
/// in one run match the events of another run with the same seed.
/// </summary>
internal sealed class EventGenerator(SimulatorOptions options, long now)
{
    private static readonly string[] Owners = ["Ivanov Ivan Ivanovich", "Maria Petrova", "José Álvarez", "Li Wei", "Anna O'Neil"];
    private static readonly string[] Offers = ["2 pizzas for the price of 1", "free dessert with every main", "20% off lunch",
        "happy hour 17-19", "\"chef's special\" 🍕 — tonight only", "kids eat free; bring the family"];

    private readonly Random _random = new(options.Seed);
    private readonly List<SimulatedEvent> _recent = [];
    private int _sequence;

    public static string RestaurantId(int seed, int index) => DeterministicGuid(seed * 1_000_003L + index).ToString("D");
    public static string ClientId(int seed, int index) => DeterministicGuid(-(seed * 1_000_003L + index) - 1).ToString("D");

    private static Guid DeterministicGuid(long seed)
    {
        var bytes = new byte[16];
        new Random((int)(seed ^ (seed >> 32))).NextBytes(bytes);
        bytes[7] = (byte)((bytes[7] & 0x0F) | 0x40); // version 4, as a real generator would mark it
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes);
    }

    public SimulatedEvent Next()
    {
        _sequence++;
        var roll = _random.NextDouble();
        if ((roll -= options.Duplicates) < 0 && _recent.Count > 0) return _recent[_random.Next(_recent.Count)] with { Kind = EventKind.Duplicate };
        if ((roll -= options.Malformed) < 0) return Malformed();
        var expired = (roll -= options.Expired) < 0;
        var e = Campaign(expired);
        if (!expired)
        {
            if (_recent.Count >= 1000) _recent[_random.Next(_recent.Count)] = e;
            else _recent.Add(e);
        }
        return e;
    }

    private SimulatedEvent Campaign(bool expired)
    {
        var withoutSubscribers = _random.NextDouble() < options.NoSubscribers;
        var index = withoutSubscribers
            ? options.Restaurants + _random.Next(Math.Max(1, options.Restaurants / 10))
            : _random.Next(options.Restaurants);
        var restaurant = !withoutSubscribers && options.SubscribedRestaurants is { Count: > 0 } known
            ? known[index % known.Count]
            : RestaurantId(options.Seed, index);
        var start = expired ? now - 86_400 - _random.Next(86_400) : now - 60 - _random.Next(3600);
        var end = expired ? start + 3600 : now + 7 * 86_400 + _random.Next(86_400);
        var owner = Owners[_random.Next(Owners.Length)];
        var campaign = new Campaign(restaurant, NewGuid().ToString("D"), $"#{_sequence}: {Offers[_random.Next(Offers.Length)]}",
            owner, $"{owner.Split(' ')[0].ToLowerInvariant()}@restaurant.example", start, end, start - _random.Next(86_400));
        return new SimulatedEvent(Encoding.UTF8.GetBytes(restaurant), ToJson(campaign), expired ? EventKind.Expired : EventKind.Valid, campaign);
    }

    private Guid NewGuid()
    {
        var bytes = new byte[16];
        _random.NextBytes(bytes);
        bytes[7] = (byte)((bytes[7] & 0x0F) | 0x40);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes);
    }

    /// <summary>The defects real feeds have: cut-off messages, wrong types, missing or null fields, bad ids and bytes.</summary>
    private SimulatedEvent Malformed()
    {
        var good = Campaign(expired: false);
        var json = Encoding.UTF8.GetString(good.Value);
        var value = (_sequence % 8) switch
        {
            0 => Encoding.UTF8.GetBytes(json[..(json.Length / 2)]),
            1 => Encoding.UTF8.GetBytes(json.Replace("\"adv_campaign_owner_contact\"", "\"contact\"")),
            2 => Encoding.UTF8.GetBytes(json.Replace($"\"adv_campaign_datetime_start\":{good.Campaign!.DatetimeStart}", $"\"adv_campaign_datetime_start\":\"{good.Campaign.DatetimeStart}\"")),
            3 => Encoding.UTF8.GetBytes(json.Replace(good.Campaign!.AdvCampaignId, "not-a-uuid")),
            4 => Encoding.UTF8.GetBytes(json.Replace($"\"{good.Campaign!.Owner}\"", "null")),
            5 => Encoding.UTF8.GetBytes(json.Replace($"\"adv_campaign_datetime_end\":{good.Campaign!.DatetimeEnd}", $"\"adv_campaign_datetime_end\":{good.Campaign.DatetimeStart - 10}")),
            6 => [.. Encoding.UTF8.GetBytes(json[..^2]), 0xC3, 0x28, (byte)'"', (byte)'}'],
            _ => Encoding.UTF8.GetBytes("[" + json + "]"),
        };
        return new SimulatedEvent(good.Key, value, EventKind.Malformed, null);
    }

    public static byte[] ToJson(Campaign c)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("restaurant_id", c.RestaurantId);
            w.WriteString("adv_campaign_id", c.AdvCampaignId);
            w.WriteString("adv_campaign_content", c.Content);
            w.WriteString("adv_campaign_owner", c.Owner);
            w.WriteString("adv_campaign_owner_contact", c.OwnerContact);
            w.WriteNumber("adv_campaign_datetime_start", c.DatetimeStart);
            w.WriteNumber("adv_campaign_datetime_end", c.DatetimeEnd);
            w.WriteNumber("datetime_created", c.DatetimeCreated);
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }
}

/// <summary>What one simulator run published, by kind, and the campaigns that must produce output.</summary>
internal sealed class SimulationReport
{
    public long Published, Valid, Duplicates, Malformed, Expired;
    public readonly HashSet<(string Restaurant, string Campaign)> ExpectedCampaigns = [];

    // "new_campaigns": first copies of active campaigns; the processor's "invalid" is a different thing (failed validation).
    public string Line() => $"produced events={Published} new_campaigns={Valid} duplicates={Duplicates} malformed={Malformed} expired={Expired}";
}

/// <summary>The simulator: seeds subscribers and publishes events, generated or replayed from a file.</summary>
internal static class Simulator
{
    public static int Run(Settings settings, SimulatorOptions options, CancellationToken stop)
    {
        if (options.SeedSubscribers > 0)
        {
            using var dataSource = PostgresDatabase.CreateDataSource(settings.Postgres.ConnectionString);
            PostgresDatabase.WaitUntilReachable(dataSource, settings.Postgres.Describe(), TimeSpan.FromSeconds(settings.Postgres.ConnectTimeoutSeconds), stop);
            var rows = SeedSubscribers(dataSource, options);
            Log.Info($"seeded {rows} subscription rows over {options.Restaurants} restaurants");
        }
        if (options.File is null && options.Count == 0) return 0;
        if (options.File is null) options = options with { SubscribedRestaurants = SubscribedRestaurants(settings, options) };
        Kafka.WaitUntilReachable(settings.Kafka, TimeSpan.FromSeconds(settings.Kafka.ConnectTimeoutSeconds));
        Kafka.EnsureTopics(settings.Kafka);
        var events = options.File is { } file ? EventsFromFile(file) : Generate(options, DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        // With --file, --count (when given) sends at most that many lines.
        if (options.File is not null && options.FileCount is { } most) events = events.Take(most);
        var report = Publish(settings.Kafka, events, options.File is null ? options.Count : options.FileCount, options.Rate, stop);
        if (options.ExpectFile is { } expect) WriteExpectations(expect, report);
        Console.WriteLine(report.Line());
        return stop.IsCancellationRequested ? 1 : 0;
    }

    /// <summary>
    /// One source for restaurants: the events use the restaurants that have subscribers in PostgreSQL, when it answers
    /// and has any, so that the simulator and the seeded table cannot disagree; otherwise the seed's own ids. Either
    /// way it says which.
    /// </summary>
    private static IReadOnlyList<string>? SubscribedRestaurants(Settings settings, SimulatorOptions options)
    {
        var where = settings.Postgres.Describe();
        try
        {
            var builder = new NpgsqlConnectionStringBuilder(settings.Postgres.ConnectionString) { Timeout = 3 };
            using var dataSource = PostgresDatabase.CreateDataSource(builder.ConnectionString);
            using var command = dataSource.CreateCommand(
                "SELECT restaurant_id FROM public.subscribers_restaurants GROUP BY restaurant_id ORDER BY restaurant_id LIMIT $1");
            command.Parameters.Add(new NpgsqlParameter { Value = Math.Max(options.Restaurants, 1) });
            using var reader = command.ExecuteReader();
            var ids = new List<string>();
            while (reader.Read()) ids.Add(reader.GetString(0));
            if (ids.Count > 0)
            {
                Log.Info($"events use the {ids.Count} restaurants with subscribers in PostgreSQL at {where} (at most --restaurants {options.Restaurants}), " +
                         $"and {options.NoSubscribers:P0} go to restaurants without any");
                return ids;
            }
            Log.Warn($"PostgreSQL at {where} has no subscribers yet: events use the seed's {options.Restaurants} restaurant ids (seed {options.Seed}, " +
                     $"first {EventGenerator.RestaurantId(options.Seed, 0)}), which have no subscribers; seed some with --seed-subscribers N");
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException or InvalidOperationException)
        {
            Log.Info($"PostgreSQL at {where} does not answer ({PostgresDatabase.Describe(e)}): events use the seed's {options.Restaurants} restaurant ids " +
                     $"(seed {options.Seed}, first {EventGenerator.RestaurantId(options.Seed, 0)}); only those seeded with the same --seed and --restaurants have subscribers");
        }
        return null;
    }

    public static IEnumerable<SimulatedEvent> Generate(SimulatorOptions options, long now)
    {
        var generator = new EventGenerator(options, now);
        for (var i = 0; i < options.Count; i++) yield return generator.Next();
    }

    /// <summary>
    /// A replay sends what the file holds, byte for byte: each line (ended by \n, which is not sent) is one message,
    /// with any \r, byte order mark or invalid UTF-8 it has; an empty line is an empty message; a last line without
    /// \n is a message too. Nothing is decoded or re-encoded.
    /// </summary>
    internal static IEnumerable<byte[]> LinesOf(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"--file: no such file {path}");
        using var file = File.OpenRead(path);
        var line = new List<byte>(1024);
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = file.Read(buffer, 0, buffer.Length)) > 0)
            for (var i = 0; i < read; i++)
            {
                if (buffer[i] != (byte)'\n') { line.Add(buffer[i]); continue; }
                yield return [.. line];
                line.Clear();
            }
        if (line.Count > 0) yield return [.. line];
    }

    private static IEnumerable<SimulatedEvent> EventsFromFile(string path)
    {
        foreach (var value in LinesOf(path))
        {
            // Keyed like the simulator's own events when the line is a valid campaign, so a restaurant keeps one partition.
            var valid = CampaignParser.TryParse(value, out var campaign, out _);
            yield return new SimulatedEvent(valid ? Encoding.UTF8.GetBytes(campaign!.RestaurantId) : null!, value,
                valid ? EventKind.Valid : EventKind.Malformed, campaign);
        }
    }

    /// <summary>Inserts rows with binary COPY; about 2% repeat a (client, restaurant) pair, as the real table does.</summary>
    public static int SeedSubscribers(NpgsqlDataSource dataSource, SimulatorOptions options)
    {
        var random = new Random(options.Seed + 7);
        var clients = Math.Max(1, options.SeedSubscribers / 3);
        using var connection = dataSource.OpenConnection();
        using var copy = connection.BeginBinaryImport("COPY public.subscribers_restaurants (client_id, restaurant_id) FROM STDIN (FORMAT BINARY)");
        string? previousClient = null, previousRestaurant = null;
        for (var i = 0; i < options.SeedSubscribers; i++)
        {
            var repeat = previousClient is not null && random.NextDouble() < 0.02;
            var client = repeat ? previousClient! : EventGenerator.ClientId(options.Seed, random.Next(clients));
            var restaurant = repeat ? previousRestaurant! : EventGenerator.RestaurantId(options.Seed, i % options.Restaurants);
            copy.StartRow();
            copy.Write(client, NpgsqlDbType.Varchar);
            copy.Write(restaurant, NpgsqlDbType.Varchar);
            (previousClient, previousRestaurant) = (client, restaurant);
        }
        copy.Complete();
        return options.SeedSubscribers;
    }

    public static SimulationReport Publish(KafkaSettings k, IEnumerable<SimulatedEvent> events, int? total, int rate, CancellationToken stop)
    {
        using var producer = Publisher(k, rate);
        return Publish(producer, k, events, total, rate, stop);
    }

    /// <summary>A producer of input events, for publishing more than once from the same one.</summary>
    public static IProducer<byte[], byte[]> Publisher(KafkaSettings k, int rate)
    {
        var config = Kafka.Producer(k, transactional: false);
        config.LingerMs = rate is > 0 and <= 5000 ? 1 : 20;
        return new ProducerBuilder<byte[], byte[]>(config).SetLogHandler((_, _) => { }).Build();
    }

    /// <summary>Publishes at <paramref name="rate"/> events/s (0: as fast as Kafka takes them); returns once all are delivered.</summary>
    public static SimulationReport Publish(IProducer<byte[], byte[]> producer, KafkaSettings k, IEnumerable<SimulatedEvent> events, int? total, int rate,
        CancellationToken stop)
    {
        var report = new SimulationReport();
        var failures = 0L;
        var clock = Stopwatch.StartNew();
        var progress = Stopwatch.StartNew();
        var first = new HashSet<(string, string)>();
        foreach (var e in events)
        {
            if (stop.IsCancellationRequested) break;
            PaceTo(rate, report.Published, clock);
            ProduceWithBackpressure(producer, k.InputTopic, new Message<byte[], byte[]> { Key = e.Key, Value = e.Value },
                r => { if (r.Error.IsError) Interlocked.Increment(ref failures); });
            Count(report, e, first);
            if (progress.Elapsed.TotalSeconds >= 2)
            {
                Log.Info($"produced {report.Published}{(total is { } t ? $"/{t}" : "")} ({report.Published / clock.Elapsed.TotalSeconds:0} events/s)",
                    ("component", "simulator"), ("published", report.Published), ("total", total));
                progress.Restart();
            }
        }
        producer.Flush(TimeSpan.FromSeconds(60));
        if (Interlocked.Read(ref failures) > 0)
            throw new ServiceUnreachableException($"{failures} events could not be delivered to Kafka at {k.BootstrapServers}");
        return report;
    }

    private static void Count(SimulationReport report, SimulatedEvent e, HashSet<(string, string)> first)
    {
        report.Published++;
        switch (e.Kind)
        {
            case EventKind.Duplicate: report.Duplicates++; break;
            case EventKind.Malformed: report.Malformed++; break;
            case EventKind.Expired: report.Expired++; break;
            default:
                report.Valid++;
                if (e.Campaign is { } c && c.IsActiveAt(DateTimeOffset.UtcNow.ToUnixTimeSeconds()) && first.Add((c.RestaurantId, c.AdvCampaignId)))
                    report.ExpectedCampaigns.Add((c.RestaurantId, c.AdvCampaignId));
                break;
        }
    }

    private static void PaceTo(int rate, long sent, Stopwatch clock)
    {
        if (rate <= 0) return;
        var ahead = TimeSpan.FromSeconds((double)sent / rate) - clock.Elapsed;
        if (ahead > TimeSpan.FromMilliseconds(2)) Thread.Sleep(ahead);
    }

    public static void ProduceWithBackpressure(IProducer<byte[], byte[]> producer, string topic, Message<byte[], byte[]> message,
        Action<DeliveryReport<byte[], byte[]>> onDelivery)
    {
        while (true)
        {
            try
            {
                producer.Produce(topic, message, onDelivery);
                return;
            }
            catch (ProduceException<byte[], byte[]> e) when (e.Error.Code == ErrorCode.Local_QueueFull)
            {
                producer.Poll(TimeSpan.FromMilliseconds(20));
            }
        }
    }

    private static void WriteExpectations(string path, SimulationReport report) =>
        File.WriteAllLines(path, report.ExpectedCampaigns.Select(c => $"{c.Restaurant},{c.Campaign}"));
}
