using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace PromoStream;

/// <summary>
/// A throwaway PostgreSQL cluster built from the system's server binaries in a temporary directory, listening on
/// 127.0.0.1 only with trust authentication. Dispose (or process exit) stops it and removes the directory.
/// </summary>
internal sealed class EmbeddedPostgres : IDisposable
{
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(90);
    private const string ServiceUser = "postgres";
    private const string InstallHint = "apt-get install -y postgresql";

    private readonly ServerBinaries _binaries;
    private readonly bool _runAsServiceUser;
    private readonly Action<string> _log;
    private int _disposed;

    public string Host => "127.0.0.1";
    public int Port { get; }
    public string ConnectionString => $"Host={Host};Port={Port};Username={ServiceUser};Database=postgres";

    /// <summary>The temporary directory holding the data directory, server log and socket; gone after Dispose.</summary>
    public string RootDirectory { get; }

    public string DataDirectory => Path.Combine(RootDirectory, "data");
    private string ServerLog => Path.Combine(RootDirectory, "server.log");

    private EmbeddedPostgres(ServerBinaries binaries, string rootDirectory, int port, Action<string> log)
    {
        _binaries = binaries;
        RootDirectory = rootDirectory;
        Port = port;
        _log = log;
        // initdb refuses to run as root, so a root caller hands the cluster to the postgres account.
        _runAsServiceUser = IsRoot();
    }

    public static EmbeddedPostgres Start(Action<string>? log = null)
    {
        var binaries = FindServerBinaries();
        var root = Directory.CreateTempSubdirectory("promostream-pg-").FullName;
        var server = new EmbeddedPostgres(binaries, root, FreePort(), log ?? (_ => { }));
        AppDomain.CurrentDomain.ProcessExit += server.OnProcessExit;
        try
        {
            server.CreateCluster();
            server.Restart();
            return server;
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    /// <summary>Stops the server cleanly; <see cref="Restart"/> brings it back on the same port and data.</summary>
    public void Stop()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        RunServerProgram(_binaries.PgCtl, "stop", "-D", DataDirectory, "-m", "fast", "-w", "-t", "60");
        _log($"PostgreSQL on {Host}:{Port} stopped");
    }

    public void Restart()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        try
        {
            RunServerProgram(_binaries.PgCtl, "start", "-D", DataDirectory, "-l", ServerLog, "-w", "-t", "60", "-o", ServerOptions());
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidOperationException($"{e.Message}\nserver log tail:\n{ServerLogTail()}", e);
        }
        _log($"PostgreSQL {_binaries.Version} listening on {Host}:{Port} (data in {DataDirectory})");
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        AppDomain.CurrentDomain.ProcessExit -= OnProcessExit;
        StopImmediately();
        try { Directory.Delete(RootDirectory, recursive: true); }
        catch (DirectoryNotFoundException) { }
    }

    private void OnProcessExit(object? sender, EventArgs e)
    {
        // An exception escaping here would turn a normal exit into a crash report.
        try { Dispose(); }
        catch (Exception error) { Console.Error.WriteLine($"embedded PostgreSQL in {RootDirectory} not cleaned up: {error.Message}"); }
    }

    private void StopImmediately()
    {
        if (!File.Exists(Path.Combine(DataDirectory, "postmaster.pid"))) return;
        try { RunServerProgram(_binaries.PgCtl, "stop", "-D", DataDirectory, "-m", "immediate", "-w", "-t", "30"); }
        catch (InvalidOperationException) { } // already stopped, or stopping on its own: the directory goes anyway
    }

    private void CreateCluster()
    {
        if (_runAsServiceUser) RunProgram("chown", "chown", [$"{ServiceUser}:", RootDirectory]);
        RunServerProgram(_binaries.InitDb, "-D", DataDirectory, "-A", "trust", "-U", ServiceUser, "-E", "UTF8", "--locale=C", "--no-sync");
    }

    /// <summary>Server settings for a disposable cluster: nothing needs to survive a crash, so durability is off.</summary>
    private string ServerOptions() =>
        // pg_ctl hands -o to /bin/sh, so the socket directory is shell-quoted.
        $"-c listen_addresses={Host} -p {Port} -c unix_socket_directories={ShellQuote(RootDirectory)} " +
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50";

    /// <summary>Runs a PostgreSQL program, as the postgres account when the caller is root.</summary>
    private void RunServerProgram(string program, params string[] arguments)
    {
        var command = $"{Path.GetFileName(program)} {arguments.FirstOrDefault()}".Trim();
        if (_runAsServiceUser) RunProgram(command, RunUserCommand(), ["-u", ServiceUser, "--", program, .. arguments]);
        else RunProgram(command, program, arguments);
    }

    /// <param name="command">How errors name the program, e.g. "pg_ctl start".</param>
    private void RunProgram(string command, string program, IReadOnlyList<string> arguments)
    {
        var start = new ProcessStartInfo(program, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            // The postgres account may not be allowed into the caller's working directory.
            WorkingDirectory = RootDirectory,
        };
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{command} could not be started");
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(CommandTimeout))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"{command} did not finish within {CommandTimeout.TotalSeconds:0}s");
        }
        // A background child still holding the pipes must not hang us; its output is then just cut short.
        Task.WaitAll([output, errors], TimeSpan.FromSeconds(5));
        if (process.ExitCode == 0) return;
        var detail = Completed(errors) is { Length: > 0 } stderr ? stderr : Completed(output);
        throw new InvalidOperationException($"{command} exited with code {process.ExitCode}: {detail}");
    }

    private static string Completed(Task<string> read) => read.IsCompletedSuccessfully ? read.Result.Trim() : "";

    private string ServerLogTail(int lines = 20)
    {
        try { return string.Join('\n', File.ReadLines(ServerLog).TakeLast(lines)); }
        catch (IOException e) { return $"(no server log: {e.Message})"; }
    }

    private sealed record ServerBinaries(string InitDb, string PgCtl, string Version);

    /// <summary>The newest Debian-packaged server (/usr/lib/postgresql/N/bin), else initdb and pg_ctl on PATH.</summary>
    private static ServerBinaries FindServerBinaries()
    {
        const string debianRoot = "/usr/lib/postgresql";
        var packaged = Directory.Exists(debianRoot)
            ? Directory.GetDirectories(debianRoot)
                .Select(d => (Version: Path.GetFileName(d), Bin: Path.Combine(d, "bin")))
                .Where(v => File.Exists(Path.Combine(v.Bin, "initdb")) && File.Exists(Path.Combine(v.Bin, "pg_ctl")))
                .OrderByDescending(v => double.TryParse(v.Version, CultureInfo.InvariantCulture, out var major) ? major : 0) // "9.6" < "15"
                .FirstOrDefault()
            : default;
        if (packaged.Bin is not null)
            return new ServerBinaries(Path.Combine(packaged.Bin, "initdb"), Path.Combine(packaged.Bin, "pg_ctl"), packaged.Version);
        if (OnPath("initdb") is { } initdb && OnPath("pg_ctl") is { } pgCtl)
            return new ServerBinaries(initdb, pgCtl, "(from PATH)");
        throw new ServiceUnreachableException(
            $"PostgreSQL server binaries were not found (no initdb and pg_ctl under {debianRoot}/*/bin or on PATH). Install them with:\n  {InstallHint}");
    }

    private static string? OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, program))
            .FirstOrDefault(File.Exists);

    // /usr/sbin is not always on PATH for non-login shells.
    private static string RunUserCommand() =>
        new[] { "/usr/sbin/runuser", "/sbin/runuser" }.FirstOrDefault(File.Exists) ?? OnPath("runuser") ?? "runuser";

    /// <summary>A port the OS just handed out, so it is almost certainly still free when the server binds it.</summary>
    internal static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try { return ((IPEndPoint)listener.LocalEndpoint).Port; }
        finally { listener.Stop(); }
    }

    private static string ShellQuote(string value) => "'" + value.Replace("'", "'\\''") + "'";

    // IsPrivilegedProcess is geteuid() == 0 on Unix.
    private static bool IsRoot() => Environment.UserName == "root" || Environment.IsPrivilegedProcess;
}
