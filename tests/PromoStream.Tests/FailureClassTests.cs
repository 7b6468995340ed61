using System.Diagnostics;
using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>A database that cannot work is permanent for the process: exit 1 at once, one attempt, a message with the fix.</summary>
[Collection(Stack.Name)]
public class FailureClassTests(ITestOutputHelper output)
{
    private const string Password = "Right-Pw-4711";

    /// <summary>A role that must log in with a password, on the shared server that otherwise trusts everyone.</summary>
    private static string PasswordRole()
    {
        var server = PostgresServer.Instance;
        var hba = Path.Combine(server.DataDirectory, "pg_hba.conf");
        if (!File.ReadAllText(hba).Contains("pwuser"))
        {
            File.WriteAllText(hba, "host all pwuser 127.0.0.1/32 scram-sha-256\n" + File.ReadAllText(hba));
            PostgresServer.Execute(server.ConnectionString, "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pwuser') THEN CREATE ROLE pwuser LOGIN; END IF; END$$");
            PostgresServer.Execute(server.ConnectionString, $"ALTER ROLE pwuser PASSWORD '{Password}'");
            PostgresServer.Execute(server.ConnectionString, "SELECT pg_reload_conf()");
        }
        return "pwuser";
    }

    private static int FailedLogins() =>
        File.ReadLines(Path.Combine(PostgresServer.Instance.RootDirectory, "server.log")).Count(l => l.Contains("password authentication failed for user \"pwuser\""));

    private (int Exit, double Seconds, string Output) RunWith(Scenario scenario, string connectionString)
    {
        var clock = Stopwatch.StartNew();
        var processor = scenario.Processor(environment: new Dictionary<string, string> { ["PROMOSTREAM__POSTGRES__CONNECTION_STRING"] = connectionString });
        var exit = processor.WaitForExit(TimeSpan.FromSeconds(60));
        return (exit, clock.Elapsed.TotalSeconds, processor.Output);
    }

    [Fact]
    public void AWrongPasswordExitsOneWithinFiveSecondsAfterOneFailedLoginNamingTheServerNotThePassword()
    {
        using var scenario = new Scenario();
        var role = PasswordRole();
        var b = new NpgsqlConnectionStringBuilder(scenario.Database) { Username = role, Password = "Wrong-Pw-0815" };
        var before = FailedLogins();
        var (exit, seconds, text) = RunWith(scenario, b.ConnectionString);
        Eventually.True(() => FailedLogins() > before, TimeSpan.FromSeconds(5), "the server logs the failed login");
        var failed = FailedLogins() - before;
        Figure.Report(output, $"wrong password: exit={exit} after {seconds:0.0}s, failed logins={failed}");
        Assert.Equal(1, exit);
        Assert.True(seconds <= 5, $"{seconds:0.0}s\n{text}");
        Assert.True(failed == 1, string.Join("\n", File.ReadLines(Path.Combine(PostgresServer.Instance.RootDirectory, "server.log")).Where(l => l.Contains("pwuser"))) + "\n" + text);
        Assert.Contains($"{b.Host}:{b.Port}/{b.Database}", text);
        Assert.Contains("28P01", text);
        Assert.Contains("password", text);
        Assert.DoesNotContain("Wrong-Pw-0815", text);
    }

    [Fact]
    public void AnUnknownDatabaseExitsOneAtOnceSayingSo()
    {
        using var scenario = new Scenario();
        var b = new NpgsqlConnectionStringBuilder(scenario.Database) { Database = "no_such_db" };
        var (exit, seconds, text) = RunWith(scenario, b.ConnectionString);
        Figure.Report(output, $"unknown database: exit={exit} after {seconds:0.0}s");
        Assert.Equal(1, exit);
        Assert.True(seconds <= 5, $"{seconds:0.0}s\n{text}");
        Assert.Contains("3D000", text);
        Assert.Contains("/no_such_db", text);
    }

    [Fact]
    public void AMissingTableExitsOneAtOnceSayingToRunInitDb()
    {
        using var scenario = new Scenario();
        PostgresServer.Execute(scenario.Database, "DROP TABLE promostream_ledger");
        var (exit, seconds, text) = RunWith(scenario, scenario.Database);
        Figure.Report(output, $"missing table: exit={exit} after {seconds:0.0}s");
        Assert.Equal(1, exit);
        Assert.True(seconds <= 5, $"{seconds:0.0}s\n{text}");
        Assert.Contains("promostream_ledger", text);
        Assert.Contains("--init-db", text);
    }
}
