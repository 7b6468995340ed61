namespace PromoStream;

/// <summary>Timestamped lines on stderr, so stdout stays for results (demo summary, bench line).</summary>
internal static class Log
{
    private static readonly object Gate = new();
    private static readonly Dictionary<string, DateTime> LastByTopic = new();

    public static void Info(string message) => Write("INFO ", message);
    public static void Warn(string message) => Write("WARN ", message);
    public static void Error(string message) => Write("ERROR", message);

    /// <summary>A warning that would repeat on every retry is shown at most once per interval.</summary>
    public static void WarnEvery(TimeSpan interval, string topic, string message)
    {
        lock (Gate)
        {
            var now = DateTime.UtcNow;
            if (LastByTopic.TryGetValue(topic, out var last) && now - last < interval) return;
            LastByTopic[topic] = now;
        }
        Warn(message);
    }

    private static void Write(string level, string message)
    {
        var line = $"{DateTime.UtcNow:yyyy-MM-ddTHH:mm:ss.fffZ} {level} {message}";
        lock (Gate) Console.Error.WriteLine(line);
    }
}
