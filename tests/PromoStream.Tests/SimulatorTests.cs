using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>The simulator as a user runs it: `--produce --file` replays a capture exactly as the file holds it.</summary>
[Collection(Stack.Name)]
public class SimulatorTests(ITestOutputHelper output)
{
    private static readonly byte[][] Lines =
    [
        [0xFF, 0xFE, .. Text.Utf8("{\"with\":\"a UTF-16 byte order mark\"}")],
        Text.Utf8(PipelineTests.SampleEvent + "\r"),
        [],
        [(byte)'{', 0xC3, 0x28, (byte)'}'],
        Text.Utf8("last line, no newline after it"),
    ];

    private static byte[] FileBytes() => [.. Lines.SelectMany((l, i) => i < Lines.Length - 1 ? [.. l, (byte)'\n'] : l)];

    [Fact]
    public void FileReplaySendsEachLineByteForByteAndCountLimitsIt()
    {
        using var scenario = new Scenario();
        var file = Path.Combine(Path.GetTempPath(), $"replay-{Guid.NewGuid():N}.jsonl");
        try
        {
            File.WriteAllBytes(file, FileBytes());
            using (var produce = new PromoStreamProcess(["--produce", "--config", scenario.ConfigFile, "--file", file]))
                Assert.True(produce.WaitForExit(TimeSpan.FromMinutes(1)) == 0, produce.Tail());
            var sent = CommittedRecords.Read(scenario.Settings.Kafka, scenario.Settings.Kafka.InputTopic, TimeSpan.FromSeconds(30))
                .Select(r => r.Message.Value ?? []).ToList();
            Figure.Report(output, $"--file replay: lines={Lines.Length} messages={sent.Count} byte-equal={Lines.Count(l => sent.Any(m => m.AsSpan().SequenceEqual(l)))}");
            Assert.Equal(Lines.Length, sent.Count);
            Assert.All(Lines, l => Assert.Contains(sent, m => m.AsSpan().SequenceEqual(l)));

            using (var three = new PromoStreamProcess(["--produce", "--config", scenario.ConfigFile, "--file", file, "--count", "3"]))
                Assert.True(three.WaitForExit(TimeSpan.FromMinutes(1)) == 0, three.Tail());
            Assert.Equal(Lines.Length + 3, CommittedRecords.Read(scenario.Settings.Kafka, scenario.Settings.Kafka.InputTopic, TimeSpan.FromSeconds(30)).Count);
        }
        finally { File.Delete(file); }
    }
}
