using System.Text;
using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>logging.format: json gives one JSON object per stderr line that any JSON parser reads; text stays the default.</summary>
public sealed class LogFormatTests(ITestOutputHelper output)
{
    private static readonly Dictionary<string, string> Json = new() { ["PROMOSTREAM__LOGGING__FORMAT"] = "json" };

    [Fact]
    public void EveryStderrLineOfARunWithJsonLogsIsOneJsonObjectAndTheStatsLineCarriesNumbers()
    {
        // --demo: the processor's whole life (start, assignment, stats, stop) in one process, and the format comes from
        // the environment alone, as --demo reads no config file.
        using var demo = new PromoStreamProcess(["--demo", "--events", "300"], Json);
        Assert.Equal(0, demo.WaitForExit(TimeSpan.FromMinutes(2)));
        Assert.Contains("demo: ok", demo.Lines.Except(demo.ErrorLines));

        var lines = demo.ErrorLines;
        Assert.NotEmpty(lines);
        var statsLines = 0;
        foreach (var line in lines)
        {
            using var json = JsonDocument.Parse(line); // throws on the first line that is not JSON, naming it in the failure
            var e = json.RootElement;
            Assert.Equal(JsonValueKind.Object, e.ValueKind);
            var timestamp = e.GetProperty("timestamp").GetString()!;
            Assert.EndsWith("Z", timestamp);
            Assert.Equal(TimeSpan.Zero, DateTimeOffset.Parse(timestamp, System.Globalization.CultureInfo.InvariantCulture).Offset);
            Assert.Contains(e.GetProperty("level").GetString(), new[] { "info", "warn", "error" });
            Assert.False(string.IsNullOrEmpty(e.GetProperty("message").GetString()));
            if (!e.GetProperty("message").GetString()!.StartsWith("stats ", StringComparison.Ordinal)) continue;
            var fields = e.GetProperty("fields");
            Assert.Equal("processor", fields.GetProperty("component").GetString());
            foreach (var name in new[] { "consumed", "invalid", "inactive", "duplicate", "replayed", "no_subscribers", "notifications", "rows_written", "transactions", "aborts" })
                Assert.Equal(JsonValueKind.Number, fields.GetProperty(name).ValueKind);
            Assert.Equal(301, fields.GetProperty("consumed").GetInt64());
            Assert.True(fields.GetProperty("notifications").GetInt64() > 0);
            statsLines++;
        }
        Assert.True(statsLines >= 1, "no stats line among:\n" + string.Join("\n", lines));
        Figure.Report(output, $"json logs: {lines.Count} stderr lines, all parsed as JSON objects; stats lines with numeric fields={statsLines}");
    }

    [Fact]
    public void AMessageWithQuotesNewlinesAndNonAsciiStaysOneLineAndReadsBackTheSame()
    {
        const string message = "campaign \"chef's special\" \\ C:\\path\nsecond line\r\ttab \u0001 bell\u0007 — Иван 🍕 </script>";
        var line = Log.JsonLine(new DateTime(2026, 1, 2, 3, 4, 5, 678, DateTimeKind.Utc), "WARN", message,
            [("component", "processor"), ("quote\"key", "value with \"quotes\"\nand a newline"), ("count", 42L), ("ratio", 0.5), ("none", null),
             ("partitions", new List<int> { 0, 3 })]);

        var text = Encoding.UTF8.GetString(line);
        Assert.EndsWith("\n", text);
        Assert.DoesNotContain('\n', text[..^1]);
        Assert.DoesNotContain('\r', text);
        // Non-ASCII as UTF-8, readable; only characters beyond the BMP (the emoji) are written as a \u surrogate pair.
        Assert.Contains("— Иван ", text);
        using var json = JsonDocument.Parse(line);
        var e = json.RootElement;
        Assert.Equal("2026-01-02T03:04:05.678Z", e.GetProperty("timestamp").GetString());
        Assert.Equal("warn", e.GetProperty("level").GetString());
        Assert.Equal(message, e.GetProperty("message").GetString());
        var fields = e.GetProperty("fields");
        Assert.Equal("value with \"quotes\"\nand a newline", fields.GetProperty("quote\"key").GetString());
        Assert.Equal(42, fields.GetProperty("count").GetInt64());
        Assert.Equal(0.5, fields.GetProperty("ratio").GetDouble());
        Assert.Equal(JsonValueKind.Null, fields.GetProperty("none").ValueKind);
        Assert.Equal(new[] { 0, 3 }, fields.GetProperty("partitions").EnumerateArray().Select(p => p.GetInt32()));
    }

    [Fact]
    public void ALoneSurrogateFromOutsideBecomesAReplacementCharacterInsteadOfAnException()
    {
        var line = Log.JsonLine(DateTime.UtcNow, "INFO", "broker said \ud800 then \udc00", []);
        using var json = JsonDocument.Parse(line);
        Assert.Equal("broker said \ufffd then \ufffd", json.RootElement.GetProperty("message").GetString());
        Assert.False(json.RootElement.TryGetProperty("fields", out _));
    }

    [Fact]
    public void TheFormatIsAConfigKeyWithItsEnvironmentVariableAndABadValueNamesIt()
    {
        var values = new Dictionary<string, string>
        {
            ["kafka.bootstrap_servers"] = "localhost:9092", ["kafka.input_topic"] = "in", ["kafka.output_topic"] = "out",
            ["kafka.dlq_topic"] = "dlq", ["kafka.group_id"] = "g", ["kafka.transactional_id"] = "t",
            ["postgres.connection_string"] = "Host=localhost;Database=de",
        };
        Assert.Equal(LogFormat.Text, Settings.FromValues(values).LogFormat);
        Assert.Equal(LogFormat.Json, Settings.FromValues(new Dictionary<string, string>(values) { ["logging.format"] = "JSON" }).LogFormat);
        Assert.Equal(LogFormat.Json, Settings.LogFormatFromEnvironment(new Dictionary<string, string?> { ["PROMOSTREAM__LOGGING__FORMAT"] = "json" }));
        Assert.Equal(LogFormat.Text, Settings.LogFormatFromEnvironment(new Dictionary<string, string?>()));

        var fromFile = Assert.Throws<ConfigException>(() => Settings.FromValues(new Dictionary<string, string>(values) { ["logging.format"] = "xml" }));
        Assert.Contains("logging.format", fromFile.Message);
        var fromEnvironment = Assert.Throws<ConfigException>(() =>
            Settings.LogFormatFromEnvironment(new Dictionary<string, string?> { ["PROMOSTREAM__LOGGING__FORMAT"] = "xml" }));
        Assert.Contains("PROMOSTREAM__LOGGING__FORMAT", fromEnvironment.Message);
    }

    [Fact]
    public void WithJsonLogsEvenAUsageErrorIsAJsonLineAndABadFormatExitsTwo()
    {
        using (var typo = new PromoStreamProcess(["--procss"], Json))
        {
            Assert.Equal(2, typo.WaitForExit(TimeSpan.FromSeconds(30)));
            var line = Assert.Single(typo.ErrorLines);
            using var json = JsonDocument.Parse(line);
            Assert.Equal("error", json.RootElement.GetProperty("level").GetString());
            Assert.Contains("did you mean --process", json.RootElement.GetProperty("message").GetString());
            Assert.Equal(2, json.RootElement.GetProperty("fields").GetProperty("exit_code").GetInt32());
        }
        using var bad = new PromoStreamProcess(["--demo"], new Dictionary<string, string> { ["PROMOSTREAM__LOGGING__FORMAT"] = "yaml" });
        Assert.Equal(2, bad.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("PROMOSTREAM__LOGGING__FORMAT", bad.Output);
        Assert.Contains("text, json", bad.Output);
    }
}
