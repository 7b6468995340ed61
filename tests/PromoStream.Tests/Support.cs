using System.Diagnostics;
using System.Text;
using Npgsql;
using Xunit;

[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace PromoStream.Tests;

/// <summary>
/// One throwaway PostgreSQL server for the whole run (EmbeddedPostgres removes it at process exit); each test
/// gets a database of its own.
/// </summary>
public sealed class PostgresServer : IDisposable
{
    private static readonly Lazy<PostgresServer> Shared = new(() => new PostgresServer());
    private static int _databases;
    internal EmbeddedPostgres Server { get; }

    private PostgresServer() => Server = EmbeddedPostgres.Start();

    internal static EmbeddedPostgres Instance => Shared.Value.Server;

    /// <summary>A new empty database with the schema applied; returns its connection string.</summary>
    public static string NewDatabase(bool withSchema = true)
    {
        var name = $"t{Environment.ProcessId}_{Interlocked.Increment(ref _databases)}";
        using (var admin = new NpgsqlConnection(Instance.ConnectionString))
        {
            admin.Open();
            // CREATE DATABASE takes no parameters; the name is generated above from digits only.
            using var create = new NpgsqlCommand($"CREATE DATABASE {name}", admin);
            create.ExecuteNonQuery();
        }
        var connectionString = new NpgsqlConnectionStringBuilder(Instance.ConnectionString) { Database = name }.ConnectionString;
        if (withSchema)
        {
            using var dataSource = PostgresDatabase.CreateDataSource(connectionString);
            using var store = new PostgresDatabase(dataSource);
            store.ApplySchema();
        }
        return connectionString;
    }

    public static long Scalar(string connectionString, string sql, params object[] parameters)
    {
        using var connection = new NpgsqlConnection(connectionString);
        connection.Open();
        using var command = Command(connection, sql, parameters);
        return Convert.ToInt64(command.ExecuteScalar());
    }

    public static void Execute(string connectionString, string sql, params object[] parameters)
    {
        using var connection = new NpgsqlConnection(connectionString);
        connection.Open();
        using var command = Command(connection, sql, parameters);
        command.ExecuteNonQuery();
    }

    private static NpgsqlCommand Command(NpgsqlConnection connection, string sql, object[] parameters)
    {
        var command = new NpgsqlCommand(sql, connection);
        foreach (var p in parameters) command.Parameters.Add(new NpgsqlParameter { Value = p });
        return command;
    }

    public void Dispose() => Server.Dispose();

    /// <summary>Stops the shared server and removes its directory, if a test started it.</summary>
    internal static void DisposeShared()
    {
        if (Shared.IsValueCreated) Shared.Value.Dispose();
    }
}

/// <summary>
/// Every test that touches PostgreSQL is in this collection, so the shared server is removed when the last of them
/// ends, not left to the test host's exit, which may be cut short before a large directory is deleted.
/// </summary>
[CollectionDefinition(Name)]
public sealed class Stack : ICollectionFixture<StackLifetime>
{
    public const string Name = "stack";
}

public sealed class StackLifetime : IDisposable
{
    public void Dispose() => PostgresServer.DisposeShared();
}

/// <summary>Waits on a condition with a deadline instead of sleeping and hoping.</summary>
public static class Eventually
{
    public static void True(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            if (deadline.Elapsed > timeout) throw new TimeoutException($"not within {timeout.TotalSeconds:0}s: {what}");
            Thread.Sleep(50);
        }
    }
}

/// <summary>
/// A real PromoStream process (the built PromoStream.dll beside the tests, or a published executable), its output
/// captured line by line.
/// </summary>
public sealed class PromoStreamProcess : IDisposable
{
    private readonly Process _process;
    private readonly List<string> _lines = [];
    private readonly List<string> _errorLines = [];
    private readonly object _gate = new();

    public PromoStreamProcess(IEnumerable<string> args, IDictionary<string, string>? environment = null, string? workingDirectory = null,
        string? executable = null)
    {
        var start = new ProcessStartInfo(executable ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? AppContext.BaseDirectory,
        };
        if (executable is null) start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "PromoStream.dll"));
        foreach (var a in args) start.ArgumentList.Add(a);
        // The runtime's debugger pipes and diagnostics socket in /tmp are removed only on a clean exit; the tests kill
        // processes hard on purpose, and each kill used to leave three files behind.
        start.Environment["DOTNET_EnableDiagnostics"] = "0";
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) start.Environment[k] = v;
        _process = new Process { StartInfo = start };
        _process.OutputDataReceived += (_, e) => Add(e.Data, error: false);
        _process.ErrorDataReceived += (_, e) => Add(e.Data, error: true);
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    private void Add(string? line, bool error)
    {
        if (line is null) return;
        lock (_gate)
        {
            _lines.Add(line);
            if (error) _errorLines.Add(line);
        }
    }

    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;
    public string Output { get { lock (_gate) return string.Join("\n", _lines); } }
    public IReadOnlyList<string> Lines { get { lock (_gate) return _lines.ToList(); } }
    /// <summary>Only what the process wrote to stderr (its log lines).</summary>
    public IReadOnlyList<string> ErrorLines { get { lock (_gate) return _errorLines.ToList(); } }

    public string WaitForLine(Func<string, bool> match, TimeSpan timeout, string what)
    {
        string? found = null;
        Eventually.True(() => (found = Lines.FirstOrDefault(match)) is not null || _process.HasExited, timeout, what);
        // A process that exited may have printed the line just before; look once more after draining.
        if (found is null) { _process.WaitForExit(); found = Lines.FirstOrDefault(match); }
        return found ?? throw new InvalidOperationException($"process exited ({_process.ExitCode}) before {what}:\n{Tail()}");
    }

    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
            throw new TimeoutException($"process {Pid} still running after {timeout.TotalSeconds:0}s:\n{Tail()}");
        _process.WaitForExit(); // drains the output handlers
        return _process.ExitCode;
    }

    public void Signal(int signal) => Posix.Kill(Pid, signal);
    public void KillHard() { try { _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } _process.WaitForExit(); }

    public string Tail(int lines = 30) => string.Join("\n", Lines.TakeLast(lines));

    public void Dispose()
    {
        if (!_process.HasExited) KillHard();
        _process.Dispose();
    }
}

internal static class Posix
{
    public const int SIGKILL = 9, SIGTERM = 15, SIGINT = 2;
    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true, EntryPoint = "kill")]
    private static extern int SysKill(int pid, int signal);
    public static void Kill(int pid, int signal) => SysKill(pid, signal);
}

/// <summary>
/// A check that needs a real Kafka-protocol broker: test.sh sets PROMOSTREAM_TEST_BOOTSTRAP to the compose stack's
/// Apache Kafka or to ../shared/kafka/kfake (PROMOSTREAM_TEST_BROKER says which); skipped elsewhere with the reason.
/// </summary>
public sealed class RealBrokerFactAttribute : FactAttribute
{
    public RealBrokerFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("PROMOSTREAM_TEST_BOOTSTRAP") is null)
            Skip = "real broker needed: " + (Environment.GetEnvironmentVariable("PROMOSTREAM_REAL_BROKER_SKIP")
                                             ?? "PROMOSTREAM_TEST_BOOTSTRAP is not set (test.sh sets it for the compose stack or kfake)");
    }
}

internal static class Text
{
    public static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);
    public static string Of(byte[]? b) => b is null ? "" : Encoding.UTF8.GetString(b);
}
