using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace PromoStream;

/// <summary>text: for a person at a terminal (the default); json: one object per line, for a log collector.</summary>
internal enum LogFormat { Text, Json }

/// <summary>
/// Timestamped lines on stderr, so stdout stays for results (demo summary, bench line). In the json format each line
/// is one JSON object: timestamp, level, message and, where the call site has structured values, a "fields" object.
/// </summary>
internal static class Log
{
    private static readonly object Gate = new();
    private static readonly Dictionary<string, DateTime> LastByTopic = new();
    // Straight to the stream, as UTF-8: a JSON line must not depend on the console's encoding (a Latin-1 locale would
    // turn non-ASCII text into '?').
    private static readonly Lazy<Stream> StandardError = new(Console.OpenStandardError);

    /// <summary>Non-ASCII text stays readable (collectors read UTF-8); quotes, backslashes and control characters are escaped.</summary>
    private static readonly JsonWriterOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static LogFormat Format { get; private set; } = LogFormat.Text;

    /// <summary>Chosen once at start (from PROMOSTREAM__LOGGING__FORMAT, then from the config file's logging.format).</summary>
    public static void Use(LogFormat format) => Format = format;

    public static void Info(string message, params (string Name, object? Value)[] fields) => Write("INFO ", message, fields);
    public static void Warn(string message, params (string Name, object? Value)[] fields) => Write("WARN ", message, fields);
    public static void Error(string message, params (string Name, object? Value)[] fields) => Write("ERROR", message, fields);

    /// <summary>A warning that would repeat on every retry is shown at most once per interval.</summary>
    public static void WarnEvery(TimeSpan interval, string topic, string message)
    {
        lock (Gate)
        {
            var now = DateTime.UtcNow;
            if (LastByTopic.TryGetValue(topic, out var last) && now - last < interval) return;
            LastByTopic[topic] = now;
        }
        Warn(message, ("topic", topic));
    }

    private static void Write(string level, string message, (string Name, object? Value)[] fields)
    {
        var now = DateTime.UtcNow;
        if (Format == LogFormat.Json)
        {
            var line = JsonLine(now, level.TrimEnd(), message, fields);
            lock (Gate)
            {
                StandardError.Value.Write(line);
                StandardError.Value.Flush();
            }
            return;
        }
        var text = $"{Timestamp(now)} {level} {message}";
        lock (Gate) Console.Error.WriteLine(text);
    }

    private static string Timestamp(DateTime utc) => utc.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);

    /// <summary>One JSON object and its newline, as UTF-8: {"timestamp":…,"level":"info","message":…,"fields":{…}}.</summary>
    internal static byte[] JsonLine(DateTime utc, string level, string message, IReadOnlyList<(string Name, object? Value)> fields)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var json = new Utf8JsonWriter(buffer, JsonOptions))
        {
            json.WriteStartObject();
            json.WriteString("timestamp", Timestamp(utc));
            json.WriteString("level", level.ToLowerInvariant());
            json.WriteString("message", Utf16Repaired(message));
            if (fields.Count > 0)
            {
                json.WriteStartObject("fields");
                foreach (var (name, value) in fields)
                {
                    json.WritePropertyName(Utf16Repaired(name));
                    WriteValue(json, value);
                }
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        buffer.Write("\n"u8);
        return buffer.WrittenSpan.ToArray();
    }

    private static void WriteValue(Utf8JsonWriter json, object? value)
    {
        switch (value)
        {
            case null: json.WriteNullValue(); break;
            case bool b: json.WriteBooleanValue(b); break;
            case int i: json.WriteNumberValue(i); break;
            case long l: json.WriteNumberValue(l); break;
            case double d when double.IsFinite(d): json.WriteNumberValue(d); break;
            case string s: json.WriteStringValue(Utf16Repaired(s)); break;
            case IEnumerable<int> numbers:
                json.WriteStartArray();
                foreach (var n in numbers) json.WriteNumberValue(n);
                json.WriteEndArray();
                break;
            default: json.WriteStringValue(Utf16Repaired(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "")); break;
        }
    }

    /// <summary>
    /// Text from outside (a broker's error, an event's bytes in a message) may hold a lone surrogate, which the JSON
    /// writer refuses; a log line must never throw, so such a character becomes U+FFFD.
    /// </summary>
    private static string Utf16Repaired(string s)
    {
        var ok = true;
        for (var i = 0; i < s.Length && ok; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            else if (char.IsSurrogate(s[i])) ok = false;
        }
        return ok ? s : Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(s));
    }
}
