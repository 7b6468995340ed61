using System.Diagnostics;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Unicode;
using Confluent.Kafka;
using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>
/// Issue "Hostile input": hundreds of messages with a definite defect each, interleaved with valid events whose text is
/// as awkward as valid text gets, through the whole pipeline on the embedded stack. Every bad message must land in the
/// DLQ exactly once with its original key and bytes and a short reason; none may reach PostgreSQL or the output topic;
/// every valid event must come out with its text exactly as it went in.
/// </summary>
[Collection(Stack.Name)]
public class HostileInputTests(ITestOutputHelper output)
{
    private const int Partitions = 8;
    private const int ClientsPerRestaurant = 3;
    private const string Marker = "@@RAW@@";
    private const string Filler = "LargeFiller";

    private static readonly string[] Restaurants = Enumerable.Range(0, 4).Select(r => $"5e5e5e5e-0000-4000-8000-{r:D12}").ToArray();
    private static readonly long Now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    private static readonly long Start = Now - 3600, End = 2659207116, Created = Now - 7200;

    private static readonly string[] Fields =
    [
        "restaurant_id", "adv_campaign_id", "adv_campaign_content", "adv_campaign_owner", "adv_campaign_owner_contact",
        "adv_campaign_datetime_start", "adv_campaign_datetime_end", "datetime_created",
    ];
    private static readonly string[] IdFields = Fields[..2];
    private static readonly string[] TextFields = Fields[2..5];
    private static readonly string[] StringFields = Fields[..5];
    private static readonly string[] IntegerFields = Fields[5..];

    private static readonly string[] Metacharacters =
    [
        "'; DROP TABLE subscribers_feedback; --", "$(rm -rf /)", "`rm -rf /`", "| cat /etc/passwd", "&& shutdown -h now",
        "\"; DROP TABLE subscribers_restaurants; --", "' OR '1'='1", "Robert'); DELETE FROM subscribers_restaurants;--",
    ];

    private static readonly string[] Emoji = ["🍕", "👨‍👩‍👧‍👦", "🇷🇺", "😀", "👩‍🍳", "🍣"];

    private sealed record Bad(byte[] Key, byte[]? Value, string Defect, bool Large);

    private sealed record Good(string Key, byte[] Value, string RestaurantId, string CampaignId, string Content, string Owner,
        string Contact, long Start, long End, long Created);

    [Fact]
    public void HundredsOfHostileMessagesGoToTheDlqByteForByteAndValidTextComesOutExactly()
    {
        var bad = BadCorpus();
        var good = ValidEvents();
        Assert.True(bad.Count >= 200, $"corpus has {bad.Count} bad messages");
        Assert.Equal(bad.Count, bad.Select(b => Convert.ToHexString(b.Key)).Distinct().Count());

        var db = PostgresServer.NewDatabase();
        for (var r = 0; r < Restaurants.Length; r++)
            for (var c = 0; c <= ClientsPerRestaurant; c++) // the last row repeats the first client, as the real table does
                PostgresServer.Execute(db, "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ($1, $2)",
                    Client(r, c % ClientsPerRestaurant), Restaurants[r]);
        using var kafka = EmbeddedKafka.Start();
        // Small batches: bad, valid and 1 MB messages mix across a dozen transactions, each committed while the next is read.
        var settings = EmbeddedStack.CreateSettings(kafka, db, Partitions, prefix: "hostile",
            new Dictionary<string, string> { ["processing.batch_max_events"] = "40" });
        Publish(settings, bad, good);

        var clock = Stopwatch.StartNew();
        var stats = RunUntilDrained(settings);
        var seconds = clock.Elapsed.TotalSeconds;
        var problems = new List<string>();
        if (stats.Consumed != bad.Count + good.Count) problems.Add($"processor consumed {stats.Consumed}, published {bad.Count + good.Count}");
        if (stats.Invalid != bad.Count) problems.Add($"processor counted {stats.Invalid} invalid, published {bad.Count} bad messages");
        var dlqCount = CheckDeadLetters(settings, bad, problems);
        var (rowsFromBad, exactRows) = CheckRows(db, good, problems);
        var exactRecords = CheckOutput(settings, good, problems);
        var exact = good.Count(g => exactRows.Contains(g.CampaignId) && exactRecords.Contains(g.CampaignId));
        Figure.Report(output, $"hostile input: bad={bad.Count} dlq={dlqCount} rows_from_bad={rowsFromBad} valid={good.Count} exact={exact}");
        output.WriteLine($"processed {stats.Consumed} messages in {seconds:0.0}s, {stats.Transactions} transactions; defects: " +
                         string.Join(", ", bad.GroupBy(b => b.Defect.Split(':')[0]).Select(g => $"{g.Key}={g.Count()}")));
        Assert.True(problems.Count == 0, $"{problems.Count} problems:\n" + string.Join("\n", problems.Take(40)));
        Assert.Equal(bad.Count, dlqCount);
        Assert.Equal(0, rowsFromBad);
        Assert.Equal(good.Count, exact);
    }

    // ---- the pipeline ----

    private static void Publish(Settings settings, List<Bad> bad, List<Good> good)
    {
        var shuffle = new Random(42);
        var messages = bad.Select(b => (b.Key, b.Value, b.Large))
            .Concat(good.Select(g => (Key: Text.Utf8(g.Key), Value: (byte[]?)g.Value, Large: g.Value.Length > 500_000)))
            .OrderBy(_ => shuffle.Next()).ToList();
        var config = new ProducerConfig(Kafka.Client(settings.Kafka)) { MessageMaxBytes = 4_000_000, LingerMs = 5 };
        using var producer = new ProducerBuilder<byte[], byte[]?>(config).SetLogHandler((_, _) => { }).Build();
        var failures = new List<string>();
        int small = 0, large = 0;
        foreach (var (key, value, isLarge) in messages)
        {
            // Explicit partitions spread the 1 MB messages, since the embedded broker keeps only about 5 MB per partition.
            var partition = isLarge ? large++ * 3 % Partitions : small++ % Partitions;
            producer.Produce(new TopicPartition(settings.Kafka.InputTopic, partition), new Message<byte[], byte[]?> { Key = key, Value = value },
                r => { if (r.Error.IsError) lock (failures) failures.Add($"{Text.Of(r.Message.Key)}: {r.Error.Reason}"); });
        }
        Assert.Equal(0, producer.Flush(TimeSpan.FromSeconds(60)));
        Assert.True(failures.Count == 0, "publishing failed: " + string.Join("; ", failures.Take(5)));
    }

    private static ProcessorStats RunUntilDrained(Settings settings)
    {
        using var stop = new CancellationTokenSource();
        var run = Task.Run(() => Processor.Run(settings, stopWhenIdleSeconds: 2, stop.Token));
        if (!run.Wait(TimeSpan.FromMinutes(2)))
        {
            stop.Cancel();
            run.Wait(TimeSpan.FromSeconds(30));
            Assert.Fail("the processor stalled: input not drained within 2 minutes (a batch replayed forever?)");
        }
        if (run.IsFaulted) Assert.Fail($"the processor crashed: {run.Exception!.InnerException}");
        return run.Result;
    }

    private static int CheckDeadLetters(Settings settings, List<Bad> bad, List<string> problems)
    {
        var dlq = CommittedRecords.Read(settings.Kafka, settings.Kafka.DlqTopic, TimeSpan.FromSeconds(60));
        var byKey = dlq.GroupBy(r => Convert.ToHexString(r.Message.Key ?? [])).ToDictionary(g => g.Key, g => g.ToList());
        var expectedKeys = bad.Select(b => Convert.ToHexString(b.Key)).ToHashSet();
        foreach (var extra in byKey.Keys.Where(k => !expectedKeys.Contains(k)))
            problems.Add($"DLQ record with an unexpected key {Text.Of(Convert.FromHexString(extra))}");
        foreach (var b in bad)
        {
            var name = $"{Text.Of(b.Key)} ({b.Defect})";
            if (!byKey.TryGetValue(Convert.ToHexString(b.Key), out var records)) { problems.Add($"{name}: not in the DLQ"); continue; }
            if (records.Count != 1) problems.Add($"{name}: {records.Count} DLQ records");
            var record = records[0];
            if (!(b.Value ?? []).AsSpan().SequenceEqual(record.Message.Value ?? []))
                problems.Add($"{name}: DLQ value differs from the original ({record.Message.Value?.Length} bytes, sent {b.Value?.Length})");
            if (b.Value is null != record.Message.Value is null)
                problems.Add($"{name}: DLQ value null={record.Message.Value is null}, original null={b.Value is null}");
            if (!record.Message.Headers.TryGetLastBytes("dlq.reason", out var reasonBytes) || reasonBytes.Length == 0)
            {
                problems.Add($"{name}: no dlq.reason header");
                continue;
            }
            if (!Utf8.IsValid(reasonBytes)) problems.Add($"{name}: dlq.reason is not valid UTF-8");
            var reason = Encoding.UTF8.GetString(reasonBytes);
            if (string.IsNullOrWhiteSpace(reason)) problems.Add($"{name}: blank dlq.reason");
            if (reason.Length > 500) problems.Add($"{name}: dlq.reason is {reason.Length} characters long");
            if (reason.Contains(Filler, StringComparison.Ordinal) || reason.Contains("DROP TABLE", StringComparison.Ordinal) || reason.Contains("rm -rf", StringComparison.Ordinal))
                problems.Add($"{name}: dlq.reason carries payload text: {reason[..Math.Min(200, reason.Length)]}");
            if (!record.Message.Headers.TryGetLastBytes("dlq.source.topic", out var topic) || Text.Of(topic) != settings.Kafka.InputTopic)
                problems.Add($"{name}: dlq.source.topic missing or wrong");
        }
        return dlq.Count;
    }

    private static (long RowsFromBad, HashSet<string> Exact) CheckRows(string db, List<Good> good, List<string> problems)
    {
        var expected = good.ToDictionary(g => g.CampaignId);
        var seen = new Dictionary<(string, string), int>();
        var wrong = new HashSet<string>();
        long rowsFromBad = 0, rows = 0;
        using (var connection = new NpgsqlConnection(db))
        {
            connection.Open();
            using var query = new NpgsqlCommand("""
                SELECT restaurant_id, adv_campaign_id, adv_campaign_content, adv_campaign_owner, adv_campaign_owner_contact,
                       adv_campaign_datetime_start, adv_campaign_datetime_end, datetime_created, client_id, feedback
                FROM subscribers_feedback
                """, connection);
            using var r = query.ExecuteReader();
            while (r.Read())
            {
                rows++;
                var campaign = r.GetString(1);
                if (!expected.TryGetValue(campaign, out var g))
                {
                    rowsFromBad++;
                    problems.Add($"row for campaign {campaign[..Math.Min(60, campaign.Length)]}, which no valid event has");
                    continue;
                }
                var client = r.GetString(8);
                seen[(campaign, client)] = seen.GetValueOrDefault((campaign, client)) + 1;
                var mismatch = Compare(g, r.GetString(0), r.GetString(2), r.GetString(3), r.GetString(4), r.GetInt64(5), r.GetInt64(6), r.GetInt64(7));
                if (!ClientsOf(g.RestaurantId).Contains(client)) mismatch ??= $"client {client} is not subscribed";
                if (!r.IsDBNull(9)) mismatch ??= "feedback is not NULL";
                if (mismatch is not null) { wrong.Add(campaign); problems.Add($"PostgreSQL {g.Key}: {mismatch}"); }
            }
        }
        if (rows != (long)good.Count * ClientsPerRestaurant)
            problems.Add($"subscribers_feedback has {rows} rows, expected {good.Count} valid events x {ClientsPerRestaurant} clients");
        var exact = new HashSet<string>();
        foreach (var g in good)
        {
            var counts = ClientsOf(g.RestaurantId).Select(c => seen.GetValueOrDefault((g.CampaignId, c))).ToList();
            if (counts.Any(n => n != 1)) problems.Add($"PostgreSQL {g.Key}: rows per client {string.Join(",", counts)}");
            else if (!wrong.Contains(g.CampaignId)) exact.Add(g.CampaignId);
        }
        return (rowsFromBad, exact);
    }

    private static HashSet<string> CheckOutput(Settings settings, List<Good> good, List<string> problems)
    {
        var expected = good.ToDictionary(g => g.CampaignId);
        var records = CommittedRecords.Read(settings.Kafka, settings.Kafka.OutputTopic, TimeSpan.FromSeconds(60));
        if (records.Count != good.Count * ClientsPerRestaurant)
            problems.Add($"output topic has {records.Count} records, expected {good.Count * ClientsPerRestaurant}");
        var seen = new Dictionary<(string, string), int>();
        var wrong = new HashSet<string>();
        foreach (var record in records)
        {
            var value = record.Message.Value ?? [];
            JsonElement root;
            try { root = JsonDocument.Parse(value).RootElement; }
            catch (JsonException e) { problems.Add($"output record is not JSON: {e.Message}"); continue; }
            var campaign = root.TryGetProperty("adv_campaign_id", out var id) && id.ValueKind == JsonValueKind.String ? id.GetString()! : "?";
            if (!expected.TryGetValue(campaign, out var g)) { problems.Add($"output record for campaign {campaign}, which no valid event has"); continue; }
            var client = root.GetProperty("client_id").GetString()!;
            seen[(campaign, client)] = seen.GetValueOrDefault((campaign, client)) + 1;
            string? mismatch = null;
            var names = root.EnumerateObject().Select(p => p.Name).ToList();
            if (names.Count != 10 || names.Distinct().Count() != 10) mismatch = $"fields {string.Join(",", names)}";
            mismatch ??= Compare(g, root.GetProperty("restaurant_id").GetString()!, root.GetProperty("adv_campaign_content").GetString()!,
                root.GetProperty("adv_campaign_owner").GetString()!, root.GetProperty("adv_campaign_owner_contact").GetString()!,
                root.GetProperty("adv_campaign_datetime_start").GetInt64(), root.GetProperty("adv_campaign_datetime_end").GetInt64(),
                root.GetProperty("datetime_created").GetInt64());
            if (Text.Of(record.Message.Key) != client) mismatch ??= $"key {Text.Of(record.Message.Key)} is not client_id {client}";
            if (!ClientsOf(g.RestaurantId).Contains(client)) mismatch ??= $"client {client} is not subscribed";
            if (!Utf8.IsValid(value)) mismatch ??= "output is not valid UTF-8";
            foreach (var emoji in Emoji.Where(e => (g.Content + g.Owner + g.Contact).Contains(e, StringComparison.Ordinal)))
                if (value.AsSpan().IndexOf(Encoding.UTF8.GetBytes(emoji)) < 0) mismatch ??= $"emoji {emoji} is not raw UTF-8 in the output JSON";
            if (Encoding.UTF8.GetString(value).Contains("\\ud83", StringComparison.OrdinalIgnoreCase)) mismatch ??= "output escapes an emoji as \\uD83x";
            if (mismatch is not null) { wrong.Add(campaign); problems.Add($"output {g.Key}: {mismatch}"); }
        }
        var exact = new HashSet<string>();
        foreach (var g in good)
        {
            var counts = ClientsOf(g.RestaurantId).Select(c => seen.GetValueOrDefault((g.CampaignId, c))).ToList();
            if (counts.Any(n => n != 1)) problems.Add($"output {g.Key}: records per client {string.Join(",", counts)}");
            else if (!wrong.Contains(g.CampaignId)) exact.Add(g.CampaignId);
        }
        return exact;
    }

    /// <summary>Ordinal string equality and equal UTF-8 bytes: the text must survive exactly, not merely look alike.</summary>
    private static string? Compare(Good g, string restaurant, string content, string owner, string contact, long start, long end, long created)
    {
        if (!Same(g.RestaurantId, restaurant)) return "restaurant_id differs";
        if (!Same(g.Content, content)) return $"adv_campaign_content differs ({Describe(g.Content)} vs {Describe(content)})";
        if (!Same(g.Owner, owner)) return $"adv_campaign_owner differs ({Describe(g.Owner)} vs {Describe(owner)})";
        if (!Same(g.Contact, contact)) return $"adv_campaign_owner_contact differs ({Describe(g.Contact)} vs {Describe(contact)})";
        if ((start, end, created) != (g.Start, g.End, g.Created)) return $"times ({start},{end},{created}) differ from ({g.Start},{g.End},{g.Created})";
        return null;
    }

    private static bool Same(string expected, string actual) =>
        string.Equals(expected, actual, StringComparison.Ordinal) && Encoding.UTF8.GetBytes(expected).AsSpan().SequenceEqual(Encoding.UTF8.GetBytes(actual));

    private static string Describe(string s) => s.Length > 60 ? $"{s.Length} chars starting {JsonSerializer.Serialize(s[..60])}" : JsonSerializer.Serialize(s);

    private static string Client(int restaurant, int client) => $"c11e0000-0000-4000-8000-{restaurant:D6}{client:D6}";

    private static string[] ClientsOf(string restaurant)
    {
        var r = Array.IndexOf(Restaurants, restaurant);
        return Enumerable.Range(0, ClientsPerRestaurant).Select(c => Client(r, c)).ToArray();
    }

    // ---- the valid events ----

    private static List<Good> ValidEvents()
    {
        string[] contents =
        [
            "Pizza \"Margherita\" 🍕 for 5 €", @"C:\offers\2024\pizza.txt and a lone \ backslash", "line 1\nline 2\r\nline 3\ttabbed",
            "'; DROP TABLE subscribers_feedback; --", "$(rm -rf /) `whoami` | cat /etc/passwd && echo pwned; exit 1",
            "Robert'); DELETE FROM subscribers_restaurants;--", "family 👨‍👩‍👧‍👦, flag 🇷🇺, sushi 🍣 and 😀",
            "Ünïcödé — “curly” «ёлки» 中文 日本語 한국어 עברית العربية", "separators \u2028 and \u2029 inside",
            "control \u0001 \u001f \u007f characters", "<script>alert('x')</script> &amp; %s %d {0} ${HOME}",
            @"\u0000 is only text here, as is \n", " padded with spaces ", "z\u0301algo\u0336 combining marks", "😀",
            "quote \" backslash \\ slash / both \\\"",
        ];
        string[] owners =
        [
            "Ivanov Ivan Ivanovich", "Иванов Иван Иванович", "李伟", "José Álvarez-O'Neil", "محمد علي", "Zoë \"Z\" Smith",
            "Robert'); DROP TABLE students;--", "👩‍🍳 Chef Anna", @"O\'Brien \\ Esq.",
        ];
        string[] contacts =
        [
            "iiivanov@restaurant.ru", "\"quoted local\"@example.com", "иван@пример.рф", "a+b@x.example; rm -rf /", "user@例子.中国",
            "`id`@example.com | tee", "o'neil@example.ie",
        ];
        var events = new List<Good>();
        for (var j = 0; j < 50; j++)
        {
            var (start, end, created) = j switch
            {
                7 => (Start, CampaignParser.MaxUnixSeconds, 1L), // the boundaries of the integer range are valid
                _ => (Start - j, End + j, Created - j),
            };
            var g = new Good($"ok-{j:D4}", [], Restaurants[j % Restaurants.Length], $"600d0000-0000-4000-8000-{j:D12}",
                contents[j % contents.Length] + $" #{j}", owners[j % owners.Length], contacts[j % contacts.Length], start, end, created);
            events.Add(g with { Value = Encode(g, j % 6) });
        }
        var big = new StringBuilder("Big valid offer: ");
        while (Encoding.UTF8.GetByteCount(big.ToString()) < 1_048_576) big.Append("🍕 \"quoted\" back\\slash line\nnext Ü ñ 中 '; DROP TABLE x; -- ").Append(big.Length).Append(' ');
        var large = new Good("ok-big", [], Restaurants[1], "600d0000-0000-4000-8000-999999999999", big.ToString(), "Большой Владелец 👩‍🍳",
            "big@restaurant.example", Start, End, Created);
        events.Add(large with { Value = Encode(large, 0) });
        return events;
    }

    /// <summary>The same event in the encodings producers really use: raw UTF-8, escaped non-ASCII, pretty-printed, reordered.</summary>
    private static byte[] Encode(Good g, int style)
    {
        (string Name, string Raw)[] fields =
        [
            ("restaurant_id", Str(g.RestaurantId)), ("adv_campaign_id", Str(g.CampaignId)), ("adv_campaign_content", Str(g.Content)),
            ("adv_campaign_owner", Str(g.Owner)), ("adv_campaign_owner_contact", Str(g.Contact)),
            ("adv_campaign_datetime_start", g.Start.ToString()), ("adv_campaign_datetime_end", g.End.ToString()), ("datetime_created", g.Created.ToString()),
        ];
        switch (style)
        {
            case 1 or 2:
                var buffer = new System.Buffers.ArrayBufferWriter<byte>();
                using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions
                       { Encoder = style == 1 ? JavaScriptEncoder.Default : JavaScriptEncoder.UnsafeRelaxedJsonEscaping, Indented = style == 2 }))
                {
                    w.WriteStartObject();
                    foreach (var (name, raw) in fields)
                    {
                        using var value = JsonDocument.Parse(raw);
                        w.WritePropertyName(name);
                        value.RootElement.WriteTo(w);
                    }
                    w.WriteEndObject();
                }
                return buffer.WrittenSpan.ToArray();
            case 3: // reversed order, whitespace everywhere, escaped field names
                return Text.Utf8("\n{ " + string.Join(" ,\r\n\t", fields.Reverse().Select(f => $"\"{f.Name.Replace("_", "\\u005f")}\" : {f.Raw}")) + " }\n");
            case 4: // unknown fields are ignored, whatever they hold
                return Text.Utf8(Build([.. fields, ("extra_nested", new string('[', 30) + "\"\\u0000\"" + new string(']', 30)),
                    ("extra_null", "null"), ("extra_text", Str("'; DROP TABLE subscribers_feedback; --")), ("EXTRA_BIG", "1e400")]));
            default:
                return Text.Utf8(Build(fields));
        }
    }

    // ---- the bad messages ----

    private sealed class Corpus
    {
        public readonly List<Bad> Items = [];
        public int Next => Items.Count;

        public void Add(string defect, byte[]? value, bool large = false, byte[]? keySuffix = null) =>
            Items.Add(new Bad([.. Text.Utf8($"bad-{Items.Count:D4}"), .. keySuffix ?? []], value, defect, large));

        public void Add(string defect, string json, bool large = false) => Add(defect, Text.Utf8(json), large);
    }

    /// <summary>An otherwise valid event for a restaurant with subscribers, active now, with a campaign id of its own.</summary>
    private static List<(string Name, string Raw)> Event(int n) =>
    [
        ("restaurant_id", Str(Restaurants[n % Restaurants.Length])),
        ("adv_campaign_id", Str($"badbad00-0000-4000-8000-{n:D12}")),
        ("adv_campaign_content", Str($"offer of bad event {n}")),
        ("adv_campaign_owner", Str("Ivanov Ivan Ivanovich")),
        ("adv_campaign_owner_contact", Str("iiivanov@restaurant.ru")),
        ("adv_campaign_datetime_start", Start.ToString()),
        ("adv_campaign_datetime_end", End.ToString()),
        ("datetime_created", Created.ToString()),
    ];

    private static List<Bad> BadCorpus()
    {
        var c = new Corpus();
        var large = LargeText();

        // Not JSON at all, or not quite.
        string valid() => Build(Event(c.Next));
        c.Add("invalid JSON: empty payload", Array.Empty<byte>());
        c.Add("invalid JSON: tombstone (null value)", (byte[]?)null);
        c.Add("invalid JSON: whitespace only", " \n\t\r ");
        foreach (var text in new[] { "{", "}", "{{}}", "{,}", "{\"a\":}", "{1:2}", "{\"restaurant_id\" \"x\"}", "undefined", "True", "nul", "[1,2", "\"unterminated" })
            c.Add($"invalid JSON: {text}", text);
        c.Add("invalid JSON: trailing comma", valid()[..^1] + ",}");
        c.Add("invalid JSON: single quotes", valid().Replace('"', '\''));
        c.Add("invalid JSON: unquoted keys", string.Join(",", valid().Split(',').Select(p => p.Replace("{\"", "{").Replace("\":", ":").TrimStart('"'))));
        c.Add("invalid JSON: line comment", valid().Replace(",\"datetime_created\"", ", // comment\n\"datetime_created\""));
        c.Add("invalid JSON: block comment", valid().Replace(",\"datetime_created\"", "/* c */,\"datetime_created\""));
        c.Add("invalid JSON: two objects", valid() + valid());
        c.Add("invalid JSON: trailing garbage", valid() + "x");
        c.Add("invalid JSON: extra brace", valid() + "}");
        c.Add("invalid JSON: missing comma", valid().Replace(",\"adv_campaign_owner\"", " \"adv_campaign_owner\""));
        c.Add("invalid JSON: double colon", valid().Replace("\"adv_campaign_owner\":", "\"adv_campaign_owner\"::"));
        foreach (var (field, raw) in new[] { (5, "NaN"), (6, "Infinity"), (7, "-Infinity"), (5, "01659203516"), (6, "+2659207116"), (7, "0x62E5"), (5, "1_659_203_516") })
            c.Add($"invalid JSON: {Fields[field]}={raw}", Build(Event(c.Next).Set(Fields[field], raw)));
        foreach (var (what, raw) in new[] { ("raw tab", "a\tb"), ("raw newline", "a\nb"), ("raw NUL byte", "a\0b"), ("raw 0x1F", "a\u001fb") })
            c.Add($"invalid JSON: {what} in a string", Build(Event(c.Next).Set("adv_campaign_content", "\"" + raw + "\"")));
        foreach (var escape in new[] { "\\x41", "\\u12", "\\uZZZZ", "\\'", "\\" })
            c.Add($"invalid JSON: bad escape {escape}", Build(Event(c.Next).Set("adv_campaign_owner", "\"a" + escape + "\"")));

        // Cut off at many points, some inside multi-byte characters.
        var template = Build(Event(c.Next).Set("adv_campaign_content", Str("Усиленная акция 🍕 \"quoted\" ok")));
        var whole = Text.Utf8(template);
        var cuts = Enumerable.Range(1, whole.Length - 1).Where(p => p % 7 == 0 || p < 4 || p > whole.Length - 4 || (whole[p] & 0xC0) == 0x80).Distinct().ToList();
        foreach (var cut in cuts) c.Add($"truncated: {cut} of {whole.Length} bytes", whole[..cut]);

        // Wrong types, nulls, empty and blank strings, missing fields.
        foreach (var field in StringFields)
            foreach (var raw in new[] { "42", "true", "false", "{}", "{\"x\":\"y\"}", "[\"x\"]", "1.5" })
                c.Add($"wrong type: {field}={raw}", Build(Event(c.Next).Set(field, raw)));
        foreach (var field in IntegerFields)
            foreach (var raw in new[] { $"\"{Start}\"", "true", "{}", $"[{Start}]", $"{Start}.5", "1.5e-3", "-0.5", "\"\"" })
                c.Add($"wrong type: {field}={raw}", Build(Event(c.Next).Set(field, raw)));
        foreach (var field in Fields) c.Add($"null: {field}", Build(Event(c.Next).Set(field, "null")));
        foreach (var field in StringFields)
            foreach (var raw in new[] { "\"\"", "\" \"", "\"   \"", "\"\\t\"", "\"\\r\\n\"", "\"\\u0020\\u0009\"", "\"\u2003\"" })
                c.Add($"empty: {field}={raw}", Build(Event(c.Next).Set(field, raw)));
        foreach (var field in Fields) c.Add($"missing: {field}", Build(Event(c.Next).Drop(field)));
        c.Add("missing: every field", "{}");
        c.Add("missing: only unknown fields", "{\"foo\":1,\"bar\":\"baz\"}");

        // Timestamps out of range, and windows that end before they start.
        foreach (var field in IntegerFields)
            foreach (var raw in new[] { "-1", "0", "-1659203516", "253402300800", "9223372036854775807", "9223372036854775808",
                                        "18446744073709551616", "99999999999999999999999999", "-9223372036854775809" })
                c.Add($"timestamp: {field}={raw}", Build(Event(c.Next).Set(field, raw)));
        foreach (var (start, end) in new[] { (Start, Start), (Start, Start - 1), (Start, Start - 86400), (2L, 1L), (CampaignParser.MaxUnixSeconds, CampaignParser.MaxUnixSeconds) })
            c.Add($"window: start={start} end={end}",
                Build(Event(c.Next).Set("adv_campaign_datetime_start", start.ToString()).Set("adv_campaign_datetime_end", end.ToString())));

        // 1 MB strings, each with a defect.
        c.Add("large: content + missing datetime_created", Build(Event(c.Next).Set("adv_campaign_content", Str(large)).Drop("datetime_created")), large: true);
        c.Add("large: owner + campaign id with SQL", Build(Event(c.Next).Set("adv_campaign_owner", Str(large)).Set("adv_campaign_id", Str(Metacharacters[0]))), large: true);
        c.Add("large: contact + null start", Build(Event(c.Next).Set("adv_campaign_owner_contact", Str(large)).Set("adv_campaign_datetime_start", "null")), large: true);
        c.Add("large: unknown field + missing restaurant_id", Build(Event(c.Next).Add("notes", Str(large)).Drop("restaurant_id")), large: true);
        c.Add("large: restaurant_id is 1 MB", Build(Event(c.Next).Set("restaurant_id", Str(large))), large: true);
        c.Add("large: content + invalid UTF-8 in the middle",
            Splice(Build(Event(c.Next).Set("adv_campaign_content", Str(large[..500_000] + Marker + large[500_000..]))), [0xC3, 0x28]), large: true);
        var largeEvent = Text.Utf8(Build(Event(c.Next).Set("adv_campaign_content", Str(large))));
        c.Add("large: content + truncated", largeEvent[..(largeEvent.Length * 3 / 5)], large: true);

        // Bytes that are not UTF-8.
        foreach (var (what, field, bytes) in new (string, string, byte[])[]
                 {
                     ("bad continuation C3 28", "adv_campaign_content", [0xC3, 0x28]), ("lone continuation 80", "adv_campaign_owner", [0x80]),
                     ("lone continuations BF BF", "adv_campaign_owner_contact", [0xBF, 0xBF]), ("overlong C0 AF", "adv_campaign_content", [0xC0, 0xAF]),
                     ("overlong E0 80 AF", "adv_campaign_content", [0xE0, 0x80, 0xAF]), ("overlong F0 80 80 AF", "adv_campaign_owner", [0xF0, 0x80, 0x80, 0xAF]),
                     ("overlong NUL C0 80", "adv_campaign_owner", [0xC0, 0x80]),
                     ("surrogate ED A0 80", "adv_campaign_content", [0xED, 0xA0, 0x80]), ("surrogate ED BF BF", "adv_campaign_owner_contact", [0xED, 0xBF, 0xBF]),
                     ("CESU-8 emoji", "adv_campaign_content", [0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80]), ("FF", "adv_campaign_content", [0xFF]),
                     ("FE FF", "adv_campaign_content", [0xFE, 0xFF]), ("F5 80 80 80", "adv_campaign_owner", [0xF5, 0x80, 0x80, 0x80]),
                     ("above U+10FFFF F4 90 80 80", "adv_campaign_content", [0xF4, 0x90, 0x80, 0x80]), ("truncated sequence E2 82", "adv_campaign_content", [0xE2, 0x82]),
                     ("Latin-1 e-acute in an id", "restaurant_id", [0xE9]),
                 })
        {
            var value = field == "restaurant_id" ? Restaurants[0][..35] + Marker : "before " + Marker + " after";
            c.Add($"not UTF-8: {what} in {field}", Splice(Build(Event(c.Next).Set(field, Str(value))), bytes));
        }
        c.Add("not UTF-8: FF in a field name", Splice(Build(Event(c.Next).Drop("adv_campaign_content").Add("adv_campaign_" + Marker + "content", Str("x"))), [0xFF]));
        c.Add("not UTF-8: C3 28 in an unknown field's name", Splice(Build(Event(c.Next).Add("extra" + Marker, "1")), [0xC3, 0x28]));
        c.Add("not UTF-8: 80 in an unknown field's value", Splice(Build(Event(c.Next).Add("extra", Str(Marker))), [0x80]));
        c.Add("not UTF-8: whole event in Latin-1", Encoding.Latin1.GetBytes(Build(Event(c.Next).Set("adv_campaign_owner", Str("José Álvarez")))));
        c.Add("invalid JSON: UTF-16 encoded event", Encoding.Unicode.GetBytes(Build(Event(c.Next))));
        c.Add("not UTF-8: bare bytes", [0xFF, 0xFE, 0x00]);
        c.Add("not UTF-8: in the Kafka key and the value", Splice(Build(Event(c.Next).Set("adv_campaign_owner", Str(Marker))), [0xFF]), keySuffix: [0xFF, 0xFE]);
        c.Add("not UTF-8: in the Kafka key, value truncated", Text.Utf8(Build(Event(c.Next)))[..40], keySuffix: [0xC0, 0xAF, 0x80]);

        // Deep nesting.
        c.Add("deep: 10000 arrays in an unknown field", Build(Event(c.Next).Add("extra", new string('[', 10_000) + new string(']', 10_000))));
        c.Add("deep: 10000 objects in an unknown field",
            Build(Event(c.Next).Add("extra", string.Concat(Enumerable.Repeat("{\"a\":", 10_000)) + "1" + new string('}', 10_000))));
        c.Add("deep: 10000 arrays in adv_campaign_content", Build(Event(c.Next).Set("adv_campaign_content", new string('[', 10_000) + new string(']', 10_000))));
        c.Add("deep: 10000 arrays at the top level", new string('[', 10_000) + new string(']', 10_000));
        c.Add("deep: 100000 unclosed arrays", new string('[', 100_000));
        c.Add("deep: 10000 unclosed objects in an unknown field", Build(Event(c.Next).Add("extra", string.Concat(Enumerable.Repeat("{\"a\":", 10_000)))));

        // Not an object.
        foreach (var text in new[] { "[]", "[" + valid() + "]", JsonSerializer.Serialize(valid()), "42", "1659203516", "true", "false", "null", "\"hello\"", "-0", "1.5e3" })
            c.Add($"not an object: {text[..Math.Min(20, text.Length)]}", text);

        // Shell and SQL metacharacters: an id with them is not a UUID; elsewhere they come with another defect.
        Func<List<(string Name, string Raw)>, List<(string Name, string Raw)>>[] second =
        [
            f => f.Drop("datetime_created"), f => f.Set("adv_campaign_owner_contact", "null"),
            f => f.Set("adv_campaign_datetime_end", (Start - 1).ToString()), f => f.Set("adv_campaign_id", Str("not-a-uuid")),
            f => f.Set("adv_campaign_datetime_start", "\"1659203516\""), f => f.Add("restaurant_id", Str(Restaurants[0])),
        ];
        foreach (var field in IdFields)
            foreach (var meta in Metacharacters.Append((Restaurants[0][..24] + "';--xxxxxxxx")[..36]))
                c.Add($"metacharacters: {field}={meta}", Build(Event(c.Next).Set(field, Str(meta))));
        foreach (var field in TextFields)
            for (var m = 0; m < Metacharacters.Length; m++)
                c.Add($"metacharacters: {field}={Metacharacters[m]} + defect {m % second.Length}",
                    Build(second[m % second.Length](Event(c.Next).Set(field, Str("offer " + Metacharacters[m])))));
        foreach (var field in IntegerFields)
            foreach (var meta in Metacharacters.Take(3))
                c.Add($"metacharacters: {field}={meta}", Build(Event(c.Next).Set(field, Str(meta))));

        // Unicode names, each with a defect.
        string[] names = ["Иванов Иван Иванович", "李伟", "José Álvarez 🍕", "محمد علي", "Zoë z\u0301algo\u0336", "👩‍🍳🇷🇺"];
        for (var u = 0; u < names.Length; u++)
            c.Add($"unicode name: {names[u]} + defect {u % second.Length}", Build(second[u % second.Length](Event(c.Next).Set("adv_campaign_owner", Str(names[u])))));

        // U+0000, which PostgreSQL text cannot hold.
        foreach (var (field, raw) in new[] { ("adv_campaign_content", "\"\\u0000\""), ("adv_campaign_owner", "\"abc\\u0000def\""),
                     ("adv_campaign_owner_contact", "\"\\u0000@example.com\""), ("adv_campaign_content", "\"ends with NUL\\u0000\""),
                     ("adv_campaign_id", "\"badbad00-0000-4000-8000-00000000\\u0000000\"") })
            c.Add($"NUL: {field}={raw}", Build(Event(c.Next).Set(field, raw)));

        // Repeated fields.
        foreach (var field in Fields)
        {
            var e = Event(c.Next);
            c.Add($"duplicate: {field}", Build(e.Add(field, e.First(f => f.Name == field).Raw)));
        }
        c.Add("duplicate: restaurant_id spelled with an escape", Build(Event(c.Next).Add("restaurant\\u005fid", Str(Restaurants[0]))));
        c.Add("duplicate: adv_campaign_id with another value", Build(Event(c.Next).Add("adv_campaign_id", Str("badbad00-1111-4000-8000-000000000000"))));

        // Escaped lone surrogates: well-formed JSON, but no Unicode text.
        foreach (var (field, raw) in new[] { ("adv_campaign_content", "\"\\ud800\""), ("adv_campaign_owner", "\"x\\udc00y\""),
                     ("adv_campaign_owner_contact", "\"abc\\ud83c\""), ("adv_campaign_content", "\"\\udf55\\ud83c reversed\"") })
            c.Add($"lone surrogate: {field}={raw}", Build(Event(c.Next).Set(field, raw)));

        // Ids that look like UUIDs but are not canonical UUID text.
        var id = Restaurants[0];
        var shapes = new[]
        {
            id.Replace("-", ""), "{" + id + "}", id[..35], id + "0", id.Replace('5', 'g'), " " + id, id + "\n", "urn:uuid:" + id,
            id[..7] + "-" + id[7] + id[9..], string.Concat(id.Select(ch => char.IsAsciiDigit(ch) ? (char)('０' + ch - '0') : ch)), id.Replace('e', 'е'),
        };
        for (var s = 0; s < shapes.Length; s++)
            c.Add($"not a UUID: {JsonSerializer.Serialize(shapes[s])}", Build(Event(c.Next).Set(IdFields[s % 2], Str(shapes[s]))));

        return c.Items;
    }

    private static string LargeText()
    {
        var sb = new StringBuilder(1_100_000);
        for (var k = 0; sb.Length < 1_048_576; k++) sb.Append(Filler).Append('-').Append(k.ToString("D7")).Append(' ');
        return sb.ToString();
    }

    // ---- JSON text helpers ----

    private static string Build(IEnumerable<(string Name, string Raw)> fields) =>
        "{" + string.Join(",", fields.Select(f => $"\"{f.Name}\":{f.Raw}")) + "}";

    /// <summary>A JSON string with only the escapes JSON requires, so everything else (emoji included) stays raw UTF-8.</summary>
    private static string Str(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        foreach (var ch in s)
        {
            if (ch == '"') sb.Append("\\\"");
            else if (ch == '\\') sb.Append("\\\\");
            else if (ch < 0x20) sb.Append($"\\u{(int)ch:x4}");
            else sb.Append(ch);
        }
        return sb.Append('"').ToString();
    }

    /// <summary>The UTF-8 of the JSON with the marker replaced by raw bytes.</summary>
    private static byte[] Splice(string json, byte[] raw)
    {
        var at = json.IndexOf(Marker, StringComparison.Ordinal);
        Assert.True(at >= 0);
        return [.. Text.Utf8(json[..at]), .. raw, .. Text.Utf8(json[(at + Marker.Length)..])];
    }
}

file static class EventFieldList
{
    public static List<(string Name, string Raw)> Set(this List<(string Name, string Raw)> fields, string name, string raw)
    {
        var i = fields.FindIndex(f => f.Name == name);
        if (i < 0) throw new ArgumentException($"no field {name}");
        fields[i] = (name, raw);
        return fields;
    }

    public static List<(string Name, string Raw)> Drop(this List<(string Name, string Raw)> fields, string name)
    {
        if (fields.RemoveAll(f => f.Name == name) == 0) throw new ArgumentException($"no field {name}");
        return fields;
    }

    public static List<(string Name, string Raw)> Add(this List<(string Name, string Raw)> fields, string name, string raw)
    {
        fields.Add((name, raw));
        return fields;
    }
}
