using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;
using Xunit.Abstractions;
using YamlDotNet.RepresentationModel;

namespace PromoStream.Tests;

/// <summary>The single-file executable the Dockerfile ships: published here for real, then run.</summary>
public sealed class PublishTests(ITestOutputHelper output)
{
    [Fact]
    public void TheSelfContainedSingleFileExecutableRunsTheDemo()
    {
        var temp = Directory.CreateTempSubdirectory("promostream-publish-");
        try
        {
            var publishDir = Path.Combine(temp.FullName, "out");
            var clock = Stopwatch.StartNew();
            // The same publish line as the Dockerfile's; its build output goes to the temp dir (--artifacts-path), not
            // into the repository's obj/ and bin/, and it leaves no build server running.
            var (exit, log) = Repository.Run("dotnet", ["publish", Path.Combine(Repository.Root, "PromoStream.csproj"),
                "-c", "Release", "-r", "linux-x64", "--self-contained", "-p:PublishSingleFile=true", "-o", publishDir,
                "--artifacts-path", Path.Combine(temp.FullName, "artifacts"), "--disable-build-servers", "--nologo"], TimeSpan.FromMinutes(5));
            var publishSeconds = clock.Elapsed.TotalSeconds;
            Assert.True(exit == 0, "dotnet publish failed:\n" + log);

            var executable = Path.Combine(publishDir, "PromoStream");
            Assert.True(File.Exists(executable));
            Assert.Empty(Directory.GetFiles(publishDir, "*.dll")); // one file: the assemblies and the runtime are inside it
            Assert.True(File.Exists(Path.Combine(publishDir, "centos8-librdkafka.so")), "librdkafka beside the executable");

            // Another working directory, and no dotnet in front: the executable stands alone; --demo also loads
            // librdkafka itself for the embedded broker, from beside the executable.
            clock.Restart();
            using var demo = new PromoStreamProcess(["--demo", "--events", "300"], workingDirectory: temp.FullName, executable: executable);
            Assert.True(demo.WaitForExit(TimeSpan.FromMinutes(2)) == 0, demo.Tail());
            Assert.Contains("demo: ok", demo.Lines);

            var executableMb = new FileInfo(executable).Length / 1e6;
            var librdkafkaMb = new FileInfo(Path.Combine(publishDir, "centos8-librdkafka.so")).Length / 1e6;
            var allMb = Directory.GetFiles(publishDir).Sum(f => new FileInfo(f).Length) / 1e6;
            Figure.Report(output, $"single-file publish: {publishSeconds:0.0} s; executable {executableMb:0} MB + centos8-librdkafka.so " +
                                  $"{librdkafkaMb:0} MB (all files {allMb:0} MB); --demo from it exit 0 in {clock.Elapsed.TotalSeconds:0.0} s");
        }
        finally
        {
            temp.Delete(recursive: true);
        }
    }
}

/// <summary>The container files, read as the tools that use them would: the Dockerfile's instructions, compose's services.</summary>
public sealed class ContainerFileTests
{
    private sealed record Instruction(string Keyword, string Arguments);

    [Fact]
    public void TheDockerfileBuildsInStagesAndRunsThePublishedSingleFileAsANonRootUser()
    {
        var instructions = Instructions(File.ReadAllText(Path.Combine(Repository.Root, "Dockerfile")));
        var stages = instructions.Where(i => i.Keyword == "FROM").ToList();
        Assert.True(stages.Count >= 2, "a build stage and a runtime stage");
        Assert.StartsWith("mcr.microsoft.com/dotnet/sdk:10.0", stages[0].Arguments);
        Assert.StartsWith("mcr.microsoft.com/dotnet/runtime-deps:10.0", stages[^1].Arguments);
        var buildStage = Regex.Match(stages[0].Arguments, @"\bAS\s+(\S+)", RegexOptions.IgnoreCase).Groups[1].Value;

        var publish = Assert.Single(instructions, i => i.Keyword == "RUN" && i.Arguments.Contains("dotnet publish"));
        foreach (var part in new[] { "-p:PublishSingleFile=true", "--self-contained", "-r linux-x64", "-c Release" })
            Assert.Contains(part, publish.Arguments);
        var publishDir = Regex.Match(publish.Arguments, @"\s-o\s+(\S+)").Groups[1].Value.TrimEnd('/');
        Assert.NotEmpty(publishDir);

        var final = instructions.SkipWhile(i => i != stages[^1]).ToList();
        // The user in effect at run time is the last USER of the final stage; neither root nor uid 0, by name or number.
        var user = final.Last(i => i.Keyword == "USER").Arguments.Split(':')[0];
        Assert.DoesNotContain(user, new[] { "root", "0" });

        var copy = Assert.Single(final, i => i.Keyword == "COPY" && i.Arguments.StartsWith($"--from={buildStage} ", StringComparison.Ordinal));
        var copyParts = copy.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(publishDir, copyParts[1].TrimEnd('/'));
        var workdir = final.Last(i => i.Keyword == "WORKDIR").Arguments;
        var installed = copyParts[2] is "./" or "." ? workdir : copyParts[2].TrimEnd('/');

        var entrypoint = JsonSerializer.Deserialize<string[]>(final.Last(i => i.Keyword == "ENTRYPOINT").Arguments)!; // exec form
        Assert.Equal($"{installed}/PromoStream", entrypoint[0]);
        Assert.Contains("--process", entrypoint);
        Assert.Contains(final, i => i.Keyword == "EXPOSE" && i.Arguments.Split(' ').Contains("9464"));

        var ignored = File.ReadAllLines(Path.Combine(Repository.Root, ".dockerignore"));
        Assert.Contains("credentials.yaml", ignored); // a local config with passwords never enters the build context
    }

    [Fact]
    public void ComposeRunsTheAppOnlyUnderItsProfileWithThreeReplicasThatPrometheusFinds()
    {
        var yaml = new YamlStream();
        yaml.Load(new StringReader(File.ReadAllText(Path.Combine(Repository.Root, "docker-compose.yml"))));
        var services = (YamlMappingNode)((YamlMappingNode)yaml.Documents[0].RootNode)["services"];
        YamlMappingNode Service(string name) => Merged((YamlMappingNode)services[name]);
        string[] Profiles(string name) => Service(name).Children.TryGetValue("profiles", out var p) ? ((YamlSequenceNode)p).Select(n => n.ToString()).ToArray() : [];

        // test.sh's plain `docker compose up -d --wait` starts exactly the brokers it needs, nothing to build.
        Assert.Empty(Profiles("kafka"));
        Assert.Empty(Profiles("postgres"));
        foreach (var name in new[] { "promostream", "promostream-init", "prometheus" }) Assert.Equal(["app"], Profiles(name));

        var app = Service("promostream");
        Assert.Equal("3", app["deploy"]["replicas"].ToString());
        var environment = (YamlMappingNode)app["environment"];
        var variables = environment.Children.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value.ToString());
        Assert.Equal("{hostname}", variables["PROMOSTREAM__KAFKA__GROUP_INSTANCE_ID"]);
        Assert.DoesNotContain("PROMOSTREAM__KAFKA__TRANSACTIONAL_ID", variables.Keys); // each process derives its own
        Assert.Equal("9464", variables["PROMOSTREAM__METRICS__PORT"]);

        var prometheus = new YamlStream();
        prometheus.Load(new StringReader(File.ReadAllText(Path.Combine(Repository.Root, "ops", "prometheus.yml"))));
        var scrape = (YamlMappingNode)((YamlSequenceNode)((YamlMappingNode)prometheus.Documents[0].RootNode)["scrape_configs"])[0];
        var dns = (YamlMappingNode)((YamlSequenceNode)scrape["dns_sd_configs"])[0];
        Assert.Equal(["promostream"], ((YamlSequenceNode)dns["names"]).Select(n => n.ToString()));
        Assert.Equal("A", dns["type"].ToString());
        Assert.Equal("9464", dns["port"].ToString());
    }

    /// <summary>A service with its `&lt;&lt;: *anchor` merged in, as compose reads it (the service's own keys win).</summary>
    private static YamlMappingNode Merged(YamlMappingNode service)
    {
        var merged = new YamlMappingNode();
        if (service.Children.TryGetValue("<<", out var baseNode))
            foreach (var (k, v) in (YamlMappingNode)baseNode) merged.Children[k] = v;
        foreach (var (k, v) in service.Children.Where(kv => kv.Key.ToString() != "<<")) merged.Children[k] = v;
        return merged;
    }

    /// <summary>The Dockerfile's instructions: comments dropped, continuation lines joined, keywords upper-cased.</summary>
    private static List<Instruction> Instructions(string dockerfile)
    {
        var instructions = new List<Instruction>();
        var pending = "";
        foreach (var raw in dockerfile.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.TrimStart().StartsWith('#')) continue;
            if (line.EndsWith('\\')) { pending += line[..^1] + " "; continue; }
            var whole = (pending + line).Trim();
            pending = "";
            if (whole.Length == 0) continue;
            var space = whole.IndexOfAny([' ', '\t']);
            instructions.Add(space < 0 ? new Instruction(whole.ToUpperInvariant(), "")
                : new Instruction(whole[..space].ToUpperInvariant(), Regex.Replace(whole[(space + 1)..].Trim(), @"\s+", " ")));
        }
        return instructions;
    }
}

internal static class Repository
{
    /// <summary>The directory of PromoStream.csproj, above the test's bin directory.</summary>
    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PromoStream.csproj"))) return dir.FullName;
        throw new InvalidOperationException($"PromoStream.csproj not found above {AppContext.BaseDirectory}");
    }

    /// <summary>Runs a tool to its end (killed at the deadline), its stdout and stderr together.</summary>
    public static (int Exit, string Output) Run(string file, IEnumerable<string> args, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) start.ArgumentList.Add(a);
        // The test host runs under `dotnet test`, whose MSBuild settings must not steer this separate build.
        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(name);
        using var process = new Process { StartInfo = start };
        var lines = new List<string>();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (lines) lines.Add(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (lines) lines.Add(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"{file} still running after {timeout.TotalSeconds:0}s:\n{string.Join("\n", lines.TakeLast(30))}");
        }
        process.WaitForExit();
        lock (lines) return (process.ExitCode, string.Join("\n", lines));
    }
}
