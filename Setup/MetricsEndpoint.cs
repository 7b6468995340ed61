using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Prometheus;

namespace PromoStream;

/// <summary>
/// /metrics (Prometheus text format), /healthz and /readyz on metrics.port. A few lines of HTTP over a TcpListener
/// rather than HttpListener, which matches requests by their Host header (a scrape addressed by another name than the
/// bound one would get 400) and binds every address for a wildcard. prometheus-net's MeterAdapter copies the Meter
/// "PromoStream" into a registry of this endpoint's own, which it writes with its text exporter.
/// </summary>
internal sealed class MetricsEndpoint : IDisposable
{
    private const int MaxRequestBytes = 8192;
    private static readonly TimeSpan ConnectionTimeout = TimeSpan.FromSeconds(10);

    private const int MaxConnections = 16;
    private readonly SemaphoreSlim _connections = new(MaxConnections);
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly CollectorRegistry _registry = Prometheus.Metrics.NewCustomRegistry();
    private readonly List<IDisposable> _adapters = [];
    private volatile Health? _health;

    public string Address { get; }

    /// <summary>Null when metrics.port is 0.</summary>
    public static MetricsEndpoint? Start(MetricsSettings settings) => settings.Port == 0 ? null : new MetricsEndpoint(settings);

    private MetricsEndpoint(MetricsSettings settings)
    {
        Address = $"{settings.Bind}:{settings.Port}";
        _listener = new TcpListener(IPAddress.Parse(settings.Bind), settings.Port);
        try { _listener.Start(); }
        catch (SocketException e) { throw new ConfigException($"key 'metrics.port': cannot listen on {Address} ({e.Message})"); }
        DotNetStats.Register(_registry);
        _ = Task.Run(AcceptConnections);
        Log.Info($"metrics and health on http://{Address}/metrics, /healthz, /readyz");
    }

    /// <summary>From now on the endpoint shows this processor's metrics and health (before: starting, not ready).</summary>
    public void Attach(PipelineMetrics metrics, Health health)
    {
        var factory = Prometheus.Metrics.WithCustomRegistry(_registry);
        // Histograms are fed as events happen: their series are kept a day without one (prometheus-net's longest). The
        // other instruments are observed at every scrape, so they may expire quickly: a partition this instance no
        // longer owns leaves promostream_consumer_lag within seconds, and a total dropped while idle returns whole.
        _adapters.Add(MeterAdapter.StartListening(new MeterAdapterOptions
        {
            Registry = _registry, MetricFactory = factory, MetricsExpireAfter = TimeSpan.FromDays(1),
            InstrumentFilterPredicate = i => i.Meter == metrics.Meter && i is Histogram<double>,
            ResolveHistogramBuckets = i => i.Name == "end_to_end_latency_seconds" ? PipelineMetrics.LatencyBuckets : PipelineMetrics.PhaseBuckets,
        }));
        _adapters.Add(MeterAdapter.StartListening(new MeterAdapterOptions
        {
            Registry = _registry, MetricFactory = factory, MetricsExpireAfter = TimeSpan.FromSeconds(5),
            InstrumentFilterPredicate = i => i.Meter == metrics.Meter && i is not Histogram<double>,
        }));
        _health = health;
    }

    private async Task AcceptConnections()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException) { return; }
            catch (SocketException)
            {
                await Task.Delay(100); // out of file descriptors, say: accept fails at once and would spin
                continue;
            }
            if (!_connections.Wait(0))
            {
                client.Dispose(); // a scraper needs one connection; a flood must not take the descriptors Kafka and PostgreSQL need
                continue;
            }
            _ = Task.Run(async () =>
            {
                try { await Answer(client); }
                finally { _connections.Release(); }
            });
        }
    }

    private async Task Answer(TcpClient client)
    {
        using var _ = client;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        timeout.CancelAfter(ConnectionTimeout);
        try
        {
            var stream = client.GetStream();
            var (method, path) = await ReadRequestLine(stream, timeout.Token);
            var (status, type, body) = method is "GET" or "HEAD" ? await Respond(path, timeout.Token) : (405, "text/plain", Text("only GET"));
            var head = $"HTTP/1.1 {status} {Reason(status)}\r\nContent-Type: {type}\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n";
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head), timeout.Token);
            if (method != "HEAD") await stream.WriteAsync(body, timeout.Token);
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or InvalidDataException) { }
    }

    private async Task<(int Status, string Type, byte[] Body)> Respond(string path, CancellationToken cancel)
    {
        var health = _health;
        switch (path)
        {
            case "/metrics":
                using (var buffer = new MemoryStream())
                {
                    await _registry.CollectAndExportAsTextAsync(buffer, cancel);
                    return (200, "text/plain; version=0.0.4; charset=utf-8", buffer.ToArray());
                }
            case "/healthz":
                return Answer(health?.Liveness() ?? new HealthAnswer(true, "alive: starting"));
            case "/readyz":
                return Answer(health?.Readiness() ?? new HealthAnswer(false, "not ready: starting (connecting to PostgreSQL and Kafka)"));
            default:
                return (404, "text/plain; charset=utf-8", Text("not found; try /metrics, /healthz or /readyz"));
        }
    }

    private static (int, string, byte[]) Answer(HealthAnswer answer) => (answer.Ok ? 200 : 503, "text/plain; charset=utf-8", Text(answer.Text));

    private static byte[] Text(string line) => Encoding.UTF8.GetBytes(line + "\n");

    private static string Reason(int status) => status switch
    {
        200 => "OK", 404 => "Not Found", 405 => "Method Not Allowed", _ => "Service Unavailable",
    };

    /// <summary>The method and path (without a query) of a request, read up to its blank line; the headers are not needed.</summary>
    private static async Task<(string Method, string Path)> ReadRequestLine(NetworkStream stream, CancellationToken cancel)
    {
        var received = new byte[MaxRequestBytes];
        var length = 0;
        while (true)
        {
            var read = await stream.ReadAsync(received.AsMemory(length), cancel);
            if (read == 0) throw new InvalidDataException("connection closed before the request ended");
            length += read;
            var text = Encoding.ASCII.GetString(received, 0, length);
            if (text.Contains("\r\n\r\n", StringComparison.Ordinal) || text.Contains("\n\n", StringComparison.Ordinal))
            {
                var parts = text[..text.IndexOf('\n')].TrimEnd('\r').Split(' ');
                if (parts.Length != 3) throw new InvalidDataException("not an HTTP request line");
                return (parts[0], parts[1].Split('?')[0]);
            }
            if (length == received.Length) throw new InvalidDataException("request headers too long");
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        foreach (var adapter in _adapters) adapter.Dispose();
    }
}
