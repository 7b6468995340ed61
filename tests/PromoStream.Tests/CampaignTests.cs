using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using Xunit;

namespace PromoStream.Tests;

public class CampaignTests
{
    // Contract section 1, verbatim.
    private const string Example =
        """{"restaurant_id":"123e4567-e89b-12d3-a456-426614174000","adv_campaign_id":"123e4567-e89b-12d3-a456-426614174003","adv_campaign_content":"first campaign","adv_campaign_owner":"Ivanov Ivan Ivanovich","adv_campaign_owner_contact":"iiivanov@restaurant.ru","adv_campaign_datetime_start":1659203516,"adv_campaign_datetime_end":2659207116,"datetime_created":1659131516}""";

    private const string Restaurant = "123e4567-e89b-12d3-a456-426614174000";
    private const string CampaignId = "123e4567-e89b-12d3-a456-426614174003";
    private const long Start = 1659203516, End = 2659207116, Created = 1659131516;
    private const long MaxUnixSeconds = 253402300799; // 9999-12-31T23:59:59Z
    private const string Window = "adv_campaign_datetime_end must be after adv_campaign_datetime_start";

    private static readonly string[] TextFields =
        ["restaurant_id", "adv_campaign_id", "adv_campaign_content", "adv_campaign_owner", "adv_campaign_owner_contact"];
    private static readonly string[] IdFields = ["restaurant_id", "adv_campaign_id"];
    private static readonly string[] IntegerFields = ["adv_campaign_datetime_start", "adv_campaign_datetime_end", "datetime_created"];
    private static readonly string[] AllFields = [.. TextFields, .. IntegerFields];

    private static readonly string[] OutputFields =
    [
        "restaurant_id", "adv_campaign_id", "adv_campaign_content", "adv_campaign_owner", "adv_campaign_owner_contact",
        "adv_campaign_datetime_start", "adv_campaign_datetime_end", "datetime_created", "client_id", "trigger_datetime_created",
    ];

    // The example as (name, raw JSON value) pairs, so each test changes exactly one thing about a valid message.
    private static readonly (string Name, string Raw)[] ExampleMembers =
    [
        ("restaurant_id", $"\"{Restaurant}\""), ("adv_campaign_id", $"\"{CampaignId}\""),
        ("adv_campaign_content", "\"first campaign\""), ("adv_campaign_owner", "\"Ivanov Ivan Ivanovich\""),
        ("adv_campaign_owner_contact", "\"iiivanov@restaurant.ru\""), ("adv_campaign_datetime_start", $"{Start}"),
        ("adv_campaign_datetime_end", $"{End}"), ("datetime_created", $"{Created}"),
    ];

    private static string Json(IEnumerable<(string Name, string Raw)> members) =>
        "{" + string.Join(",", members.Select(m => $"\"{m.Name}\":{m.Raw}")) + "}";

    private static string With(string field, string raw) => Json(ExampleMembers.Select(m => m.Name == field ? (m.Name, raw) : m));
    private static string Without(string field) => Json(ExampleMembers.Where(m => m.Name != field));
    private static string Quoted(string text) => JsonSerializer.Serialize(text);

    private static (bool Ok, Campaign? Campaign, string Reason) Parse(string json) => Parse(Encoding.UTF8.GetBytes(json));

    private static (bool Ok, Campaign? Campaign, string Reason) Parse(byte[] utf8)
    {
        var ok = CampaignParser.TryParse(utf8, out var campaign, out var reason);
        return (ok, campaign, reason);
    }

    private static void AssertRejected(string json, string reason) => AssertRejected(Encoding.UTF8.GetBytes(json), reason);

    private static void AssertRejected(byte[] utf8, string reason)
    {
        var result = Parse(utf8);
        Assert.False(result.Ok);
        Assert.Null(result.Campaign);
        Assert.Equal(reason, result.Reason);
    }

    private static Campaign ParseValid(string json)
    {
        var result = Parse(json);
        Assert.True(result.Ok, result.Reason);
        Assert.Equal("", result.Reason);
        return result.Campaign!;
    }

    private static Campaign ExampleCampaign() => new(Restaurant, CampaignId, "first campaign", "Ivanov Ivan Ivanovich",
        "iiivanov@restaurant.ru", Start, End, Created);

    // Kafka header values and log lines: short printable ASCII.
    private static void AssertSafeReason(string reason)
    {
        Assert.NotEmpty(reason);
        Assert.True(reason.Length <= "invalid JSON: ".Length + 200, $"{reason.Length} chars");
        Assert.All(reason, c => Assert.InRange(c, ' ', '~'));
    }

    private static TheoryData<string, string> Cross(string[] fields, params string[] raws)
    {
        var data = new TheoryData<string, string>();
        foreach (var field in fields)
            foreach (var raw in raws) data.Add(field, raw);
        return data;
    }

    // ---- valid input ----

    [Fact]
    public void TheMemberHelperReproducesTheContractExample() => Assert.Equal(Example, Json(ExampleMembers));

    [Fact]
    public void ContractExampleParsesToItsExactValues()
    {
        var c = ParseValid(Example);

        Assert.Equal(Restaurant, c.RestaurantId);
        Assert.Equal(CampaignId, c.AdvCampaignId);
        Assert.Equal("first campaign", c.Content);
        Assert.Equal("Ivanov Ivan Ivanovich", c.Owner);
        Assert.Equal("iiivanov@restaurant.ru", c.OwnerContact);
        Assert.Equal(Start, c.DatetimeStart);
        Assert.Equal(End, c.DatetimeEnd);
        Assert.Equal(Created, c.DatetimeCreated);
        Assert.Equal(new CampaignKey(Guid.Parse(Restaurant), Guid.Parse(CampaignId)), c.Key);
        Assert.Equal(ExampleCampaign(), c);
    }

    [Fact]
    public void MembersInAnyOrderAndWithWhitespaceAreAccepted()
    {
        var reordered = Json(ExampleMembers.Reverse());
        var spaced = "\r\n {\n" + string.Join(" ,\n\t", ExampleMembers.Select(m => $"\"{m.Name}\" : {m.Raw}")) + "\n} \n";

        Assert.Equal(ExampleCampaign(), ParseValid(reordered));
        Assert.Equal(ExampleCampaign(), ParseValid(spaced));
    }

    [Theory]
    [InlineData(1, 2, 1)]
    [InlineData(1, MaxUnixSeconds, MaxUnixSeconds)]
    [InlineData(MaxUnixSeconds - 1, MaxUnixSeconds, 1)]
    public void BoundaryTimestampsAreAccepted(long start, long end, long created)
    {
        var json = Json(ExampleMembers.Select(m => m.Name switch
        {
            "adv_campaign_datetime_start" => (m.Name, $"{start}"),
            "adv_campaign_datetime_end" => (m.Name, $"{end}"),
            "datetime_created" => (m.Name, $"{created}"),
            _ => m,
        }));

        var c = ParseValid(json);

        Assert.Equal((start, end, created), (c.DatetimeStart, c.DatetimeEnd, c.DatetimeCreated));
    }

    [Fact]
    public void UppercaseUuidTextIsAcceptedKeptVerbatimAndKeyedLikeLowercase()
    {
        var upper = Restaurant.ToUpperInvariant();

        var c = ParseValid(With("restaurant_id", $"\"{upper}\""));

        Assert.Equal(upper, c.RestaurantId);
        Assert.Equal(ExampleCampaign().Key, c.Key);
    }

    [Fact]
    public void EscapedTextIsDecoded()
    {
        var c = ParseValid(With("adv_campaign_content", "\"\\u0041\\n\\\"\\\\\\/\\ud83c\\udf55\""));

        Assert.Equal("A\n\"\\/🍕", c.Content);
    }

    public static TheoryData<string> UnknownMembers() => new()
    {
        "\"extra\":1",
        "\"extra\":null",
        "\"extra\":\"text\"",
        "\"extra\":-1.5e300",
        "\"extra\":true",
        "\"extra\":{}",
        "\"extra\":{\"a\":[1,{\"b\":null,\"c\":[[],{}]}],\"restaurant_id\":\"shadow\"}",
        "\"extra\":[[[]],[{\"adv_campaign_id\":null}],\"x\"]",
        "\"nested\":" + new string('[', 60) + new string(']', 60),
        "\"Restaurant_ID\":\"names are case-sensitive\"",
        "\"restaurant_id \":42",
        "\"x\":1,\"x\":{\"dup\":\"unknown fields may repeat\"}",
        "\"\":\"empty name\"",
        "\"\\ud800\":\"unpaired surrogate in a name\"",
        "\"restaurant_id\\udc00\":1",
        "\"restaurant\\u005Fid\\u0000\":1",
    };

    [Theory]
    [MemberData(nameof(UnknownMembers))]
    public void UnknownFieldsAreIgnoredWhateverTheirTypeOrNesting(string extra)
    {
        var atStart = "{" + extra + "," + Example[1..];
        var atEnd = Example[..^1] + "," + extra + "}";
        var inMiddle = Json(ExampleMembers.Take(4)).TrimEnd('}') + "," + extra + "," + Json(ExampleMembers.Skip(4))[1..];

        Assert.Equal(ExampleCampaign(), ParseValid(atStart));
        Assert.Equal(ExampleCampaign(), ParseValid(atEnd));
        Assert.Equal(ExampleCampaign(), ParseValid(inMiddle));
    }

    // ---- invalid input, one reason each ----

    public static TheoryData<string, byte[]> InvalidUtf8() => new()
    {
        { "broken two-byte sequence in a string", Splice("first ", [0xC3, 0x28], " campaign") },
        { "lone continuation byte", Splice("first ", [0x80], " campaign") },
        { "overlong encoding of '/'", Splice("first ", [0xC0, 0xAF], " campaign") },
        { "UTF-8 encoded surrogate", Splice("first ", [0xED, 0xA0, 0x80], " campaign") },
        { "emoji cut after three of four bytes", Splice("first ", [0xF0, 0x9F, 0x8D], "") },
        { "0xFF", Splice("", [0xFF], "") },
        { "only garbage", [0xFE, 0xFF, 0x00] },
        { "latin-1 instead of UTF-8", Encoding.Latin1.GetBytes(With("adv_campaign_owner", "\"Müller\"")) },
    };

    // The example with raw bytes in place of the campaign content.
    private static byte[] Splice(string before, byte[] bytes, string after)
    {
        var parts = Example.Split("first campaign");
        return [.. Encoding.UTF8.GetBytes(parts[0] + before), .. bytes, .. Encoding.UTF8.GetBytes(after + parts[1])];
    }

    [Theory]
    [MemberData(nameof(InvalidUtf8))]
    public void InvalidUtf8IsRejected(string what, byte[] payload)
    {
        Assert.False(Utf8.IsValid(payload), what);
        AssertRejected(payload, "payload is not valid UTF-8");
    }

    public static TheoryData<string> MalformedJson() => new()
    {
        "",
        "   \n",
        Example[..(Example.Length / 2)],
        Example[..^1],
        "{",
        "{\"restaurant_id\"",
        "{\"restaurant_id\":",
        "{\"restaurant_id\":\"123e4567",
        Example + "x",
        Example + "{}",
        Example + Example,
        Example + ",",
        Example + " SECRET",
        Example[..^1] + ",}",
        Example[..^1] + ",\"deep\":" + new string('[', 100) + new string(']', 100) + "}",
        Example[..^1] + ",\"deep\":" + string.Concat(Enumerable.Repeat("{\"a\":", 100)) + "1" + new string('}', 100) + "}",
        new string('[', 100) + Example + new string(']', 100),
        "{'restaurant_id':'SECRET'}",
        "{restaurant_id:\"SECRET\"}",
        Example[..^1] + ",/* SECRET */\"a\":1}",
        Example[..^1] + ",\"a\":NaN}",
        Example[..^1] + ",\"a\":truSECRET-SECRET-SECRET}",
        Example[..^1] + ",\"a\":nul\"l' is SECRET}",
        Example[..^1] + ",\"a\":01}",
        Example[..^1] + ",\"a\":\"tab\there\"}",
        Example[..^1] + ",\"a\":\"\\x\"}",
        Example[..^1] + ",\"a\":\"\\u12G4\"}",
        Example.Replace(":", " "),
        Example + "\u0000",
        "\uFEFF" + Example,
    };

    [Theory]
    [MemberData(nameof(MalformedJson))]
    public void MalformedJsonIsRejectedWithAReasonThatDoesNotEchoIt(string payload)
    {
        var (ok, campaign, reason) = Parse(payload);

        Assert.False(ok);
        Assert.Null(campaign);
        Assert.StartsWith("invalid JSON: ", reason);
        Assert.DoesNotContain("SECRET", reason);
        AssertSafeReason(reason);
    }

    [Fact]
    public void EveryTruncationOfTheExampleIsInvalidJson()
    {
        var bytes = Encoding.UTF8.GetBytes(Example);
        for (var length = 0; length < bytes.Length; length++)
        {
            var reason = Parse(bytes[..length]).Reason;
            Assert.True(reason.StartsWith("invalid JSON: ", StringComparison.Ordinal), $"length {length}: {reason}");
        }
    }

    [Fact]
    public void AnInvalidLiteralIsReportedWithoutTheRestOfThePayload()
    {
        var reason = Parse(Example[..^1] + ",\"a\":tru" + new string('x', 5000) + "}").Reason;

        Assert.StartsWith("invalid JSON: '...' is an invalid JSON literal. Expected the literal 'true'.", reason);
        AssertSafeReason(reason);
    }

    [Fact]
    public void ASingleOffendingCharacterIsNamedBecauseItHelps()
    {
        Assert.StartsWith("invalid JSON: 'x' is invalid after a single JSON value.", Parse(Example + "x").Reason);
        Assert.StartsWith("invalid JSON: '0xEF' is an invalid start of a value.", Parse("\uFEFF" + Example).Reason);
    }

    [Theory]
    [InlineData("'x' is invalid after a value.", "'x' is invalid after a value.")]
    [InlineData("'0x01' is invalid within a JSON string.", "'0x01' is invalid within a JSON string.")]
    [InlineData("'truSECRET' is an invalid JSON literal.", "'...' is an invalid JSON literal.")]
    [InlineData("'tru' is SECRET' is an invalid JSON literal.", "'...' is an invalid JSON literal.")]
    [InlineData("'é' is invalid after a value.", "'?' is invalid after a value.")]
    [InlineData("line\nbreak\u0001 and 🍕", "line?break? and ??")]
    public void ReaderMessagesLoseQuotedPayloadAndNonAscii(string message, string expected) =>
        Assert.Equal(expected, CampaignParser.WithoutPayload(message));

    [Fact]
    public void ReaderMessagesAreCappedAt200Characters() =>
        Assert.Equal(new string('a', 200), CampaignParser.WithoutPayload(new string('a', 5000)));

    [Fact]
    public void NestingDeeperThanTheDefaultLimitIsRejectedButUpToItIsNot()
    {
        string Nested(int depth) => Example[..^1] + ",\"n\":" + new string('[', depth) + new string(']', depth) + "}";

        Assert.True(Parse(Nested(63)).Ok); // 63 arrays inside the top-level object: depth 64
        Assert.Contains("maximum configured depth of 64", Parse(Nested(64)).Reason);
    }

    [Theory]
    [InlineData("[" + Example + "]")]
    [InlineData("[]")]
    [InlineData("\"" + Restaurant + "\"")]
    [InlineData("1659203516")]
    [InlineData("null")]
    [InlineData("true")]
    public void TopLevelValueThatIsNotAnObjectIsRejected(string payload) => AssertRejected(payload, "payload is not a JSON object");

    [Fact]
    public void TopLevelArrayThatIsAlsoCutOffIsReportedAsInvalidJson() =>
        Assert.StartsWith("invalid JSON: ", Parse("[" + Example).Reason);

    public static TheoryData<string> EachField() => [.. AllFields];

    [Theory]
    [MemberData(nameof(EachField))]
    public void MissingFieldIsNamed(string field) => AssertRejected(Without(field), $"missing field {field}");

    [Fact]
    public void EmptyObjectMissesTheFirstField() => AssertRejected("{}", "missing field restaurant_id");

    [Theory]
    [MemberData(nameof(EachField))]
    public void NullFieldIsNamed(string field) => AssertRejected(With(field, "null"), $"field {field} is null");

    [Theory]
    [MemberData(nameof(EachField))]
    public void DuplicateFieldIsRejectedEvenWithTheSameValue(string field)
    {
        var raw = ExampleMembers.Single(m => m.Name == field).Raw;

        AssertRejected(Example[..^1] + $",\"{field}\":{raw}}}", $"duplicate field {field}");
    }

    [Fact]
    public void DuplicateSpelledWithAnEscapeIsStillADuplicate() =>
        AssertRejected(Example[..^1] + ",\"restaurant\\u005fid\":\"" + Restaurant + "\"}", "duplicate field restaurant_id");

    public static TheoryData<string, string> TextOfAnotherType() =>
        Cross(TextFields, "42", "0", "-1.5", "true", "false", "{}", "[]", "[\"x\"]", "{\"value\":\"x\"}");

    [Theory]
    [MemberData(nameof(TextOfAnotherType))]
    public void TextFieldOfAnotherJsonTypeIsRejected(string field, string raw) =>
        AssertRejected(With(field, raw), $"field {field} must be a string");

    public static TheoryData<string, string> IntegerOfAnotherType() =>
        Cross(IntegerFields, "1659203516.0", "1659203516.5", "1.6e9", "1.6E9", "1659203516e0", "16592035e+2", "-1.0",
            "\"1659203516\"", "\"\"", "true", "{}", "[1659203516]", "{\"seconds\":1659203516}");

    [Theory]
    [MemberData(nameof(IntegerOfAnotherType))]
    public void IntegerFieldThatIsNotAJsonIntegerIsRejected(string field, string raw) =>
        AssertRejected(With(field, raw), $"field {field} must be an integer");

    public static TheoryData<string, string> IntegerOutOfRange() =>
        Cross(IntegerFields, "0", "-0", "-1", "-1659203516", "253402300800", "9223372036854775807", "-9223372036854775808",
            "9223372036854775808", "99999999999999999999999999");

    [Theory]
    [MemberData(nameof(IntegerOutOfRange))]
    public void IntegerOutsideOneToYear9999IsRejected(string field, string raw) =>
        AssertRejected(With(field, raw), $"field {field} is out of range");

    public static TheoryData<string, string> EmptyText() =>
        Cross(TextFields, "\"\"", "\" \"", "\"   \"", "\"\\t\\r\\n \"", "\"\\u00a0\"", "\"\\u2003\\u3000\"");

    [Theory]
    [MemberData(nameof(EmptyText))]
    public void EmptyOrWhitespaceTextIsRejected(string field, string raw) =>
        AssertRejected(With(field, raw), $"field {field} is empty");

    public static TheoryData<string, string> NotUuids() => Cross(IdFields,
        "not-a-uuid",
        "123e4567e89b12d3a456426614174000",
        "{123e4567-e89b-12d3-a456-426614174000}",
        "(123e4567-e89b-12d3-a456-426614174000)",
        " 123e4567-e89b-12d3-a456-426614174000",
        "123e4567-e89b-12d3-a456-426614174000 ",
        "123e4567-e89b-12d3-a456-426614174000\n",
        "+23e4567-e89b-12d3-a456-426614174000",
        "0x3e4567-e89b-12d3-a456-426614174000",
        "123e4567-e89b-12d3-a456-42661417400g",
        "123e4567-e89b-12d3-a456-42661417400",
        "123e4567-e89b-12d3-a456-4266141740000",
        "123e4567_e89b_12d3_a456_426614174000",
        "123e4567-e89b-12d3-a456-4266141740\u0660\u0661",
        "123e4567-e89b-12d3-a456-426614174000\u0000",
        "123e4567-e89b-12d3-a456-426614174000'; DROP TABLE subscribers_feedback; --",
        "'; DROP TABLE x; --",
        "' OR '1'='1",
        "$(rm -rf /)",
        "`reboot`",
        "123e4567-e89b-12d3-a456-426614174000 && rm -rf /",
        "123e4567-e89b-12d3-a456-426614174000|cat /etc/passwd",
        "../../etc/passwd");

    [Theory]
    [MemberData(nameof(NotUuids))]
    public void IdThatIsNotCanonicalUuidTextIsRejected(string field, string id) =>
        AssertRejected(With(field, Quoted(id)), $"field {field} is not a UUID");

    public static TheoryData<long, long> EndNotAfterStart() => new()
    {
        { Start, Start },
        { Start, Start - 1 },
        { 2, 1 },
        { MaxUnixSeconds, MaxUnixSeconds },
        { MaxUnixSeconds, 1 },
    };

    [Theory]
    [MemberData(nameof(EndNotAfterStart))]
    public void EndThatIsNotAfterStartIsRejected(long start, long end)
    {
        var json = Json(ExampleMembers.Select(m => m.Name switch
        {
            "adv_campaign_datetime_start" => (m.Name, $"{start}"),
            "adv_campaign_datetime_end" => (m.Name, $"{end}"),
            _ => m,
        }));

        AssertRejected(json, Window);
    }

    [Fact]
    public void AnEscapedUnpairedSurrogateIsRejectedBecauseItHasNoUtf8Form()
    {
        AssertRejected(With("adv_campaign_content", "\"half \\ud83c pizza\""), "field adv_campaign_content is not valid Unicode");
        AssertRejected(With("adv_campaign_owner", "\"\\udf55\""), "field adv_campaign_owner is not valid Unicode");
    }

    public static TheoryData<string, string> NulInText() =>
        Cross(["adv_campaign_content", "adv_campaign_owner", "adv_campaign_owner_contact"], "\"\\u0000\"", "\"first\\u0000campaign\"");

    [Theory]
    [MemberData(nameof(NulInText))]
    public void TextWithANulCharacterIsRejectedBecausePostgresCannotStoreIt(string field, string raw) =>
        AssertRejected(With(field, raw), $"field {field} contains a NUL character");

    [Fact]
    public void TheFirstFieldProblemInDocumentOrderIsReported()
    {
        var json = Json(ExampleMembers.Select(m => m.Name switch
        {
            "adv_campaign_content" => (m.Name, "42"),
            "datetime_created" => (m.Name, "null"),
            _ => m,
        }));

        AssertRejected(json, "field adv_campaign_content must be a string");
    }

    [Fact]
    public void ACutOffMessageIsReportedAsCutOffEvenAfterAFieldProblem()
    {
        var json = With("restaurant_id", "null");

        Assert.StartsWith("invalid JSON: ", Parse(json[..^10]).Reason);
    }

    [Fact]
    public void FieldProblemsComeBeforeMissingFieldsAndTheWindow()
    {
        var json = Json(ExampleMembers.Where(m => m.Name != "datetime_created").Select(m =>
            m.Name == "adv_campaign_datetime_end" ? (m.Name, "\"soon\"") : m));

        AssertRejected(json, "field adv_campaign_datetime_end must be an integer");
        AssertRejected(Without("datetime_created").Replace($"{End}", $"{Start}"), "missing field datetime_created");
    }

    public static TheoryData<string> HostilePayloads() => new()
    {
        With("restaurant_id", Quoted("SECRET'; DROP TABLE x; --")),
        With("adv_campaign_content", "{\"SECRET\":\"SECRET\"}"),
        With("adv_campaign_datetime_start", Quoted("SECRET")),
        With("adv_campaign_datetime_end", "1.5e999"),
        Example[..^1] + ",\"a\":falsSECRET\u0001\u00e9\u2028🍕}",
        Example[..^1] + ",\"SECRET\u0001\":[" + new string('{', 70),
        "SECRET",
        "\u0001SECRET",
        "🍕SECRET",
    };

    [Theory]
    [MemberData(nameof(HostilePayloads))]
    public void ReasonsAreShortPrintableAsciiWithoutPayloadText(string payload)
    {
        var (ok, _, reason) = Parse(payload);

        Assert.False(ok);
        Assert.DoesNotContain("SECRET", reason, StringComparison.OrdinalIgnoreCase);
        AssertSafeReason(reason);
    }

    [Fact]
    public void ArbitraryBytesNeverThrowAndAlwaysGiveACampaignOrAReason()
    {
        var random = new Random(20240611);
        var example = Encoding.UTF8.GetBytes(Example);
        byte[] interesting = [.. "\"\\{}[],:0.e-+ tnu"u8, 0x00, 0x01, 0x7F, 0x80, 0xC3, 0xED, 0xF0, 0xFF];
        string[] tokens = ["\\ud800", "\\udc00", "\\ud83c\\udf55", "\\u0000", "\\u005f", "\\\"", "1e999", "-0", "null", "[{", "}]", "\"x\":"];
        var accepted = 0;
        for (var i = 0; i < 20_000; i++)
        {
            var payload = i % 10 == 0 ? RandomBytes(random) : Mutate(random, example, interesting, tokens);
            var ok = CampaignParser.TryParse(payload, out var campaign, out var reason);
            if (ok)
            {
                accepted++;
                Assert.NotNull(campaign);
                Assert.Equal("", reason);
                using var doc = JsonDocument.Parse(new NotificationTemplate(campaign!, 1).For("c")); // output stays valid JSON
                Assert.Equal(campaign!.Content, doc.RootElement.GetProperty("adv_campaign_content").GetString());
            }
            else
            {
                Assert.Null(campaign);
                AssertSafeReason(reason);
            }
        }
        Assert.InRange(accepted, 1, 19_999); // the mutations exercised both outcomes
    }

    private static byte[] RandomBytes(Random random)
    {
        var bytes = new byte[random.Next(0, 64)];
        random.NextBytes(bytes);
        return bytes;
    }

    private static byte[] Mutate(Random random, byte[] source, byte[] interesting, string[] tokens)
    {
        var bytes = new List<byte>(source);
        for (var edits = random.Next(1, 4); edits > 0 && bytes.Count > 0; edits--)
        {
            var at = random.Next(bytes.Count);
            switch (random.Next(6))
            {
                case 0: bytes[at] ^= (byte)(1 << random.Next(8)); break;
                case 1: bytes[at] = interesting[random.Next(interesting.Length)]; break;
                case 2: bytes.RemoveRange(at, Math.Min(random.Next(1, 8), bytes.Count - at)); break;
                case 3: bytes.Insert(at, interesting[random.Next(interesting.Length)]); break;
                case 4: bytes.InsertRange(at, Encoding.UTF8.GetBytes(tokens[random.Next(tokens.Length)])); break;
                default: bytes.RemoveRange(at, bytes.Count - at); break;
            }
        }
        return [.. bytes];
    }

    // ---- campaign behaviour ----

    [Theory]
    [InlineData(Start - 1, false)]
    [InlineData(Start, true)]
    [InlineData(Start + 1, true)]
    [InlineData(End - 1, true)]
    [InlineData(End, false)]
    [InlineData(End + 1, false)]
    [InlineData(long.MinValue, false)]
    [InlineData(long.MaxValue, false)]
    public void ActiveFromStartInclusiveToEndExclusive(long now, bool active) =>
        Assert.Equal(active, ExampleCampaign().IsActiveAt(now));

    [Fact]
    public void OneSecondCampaignIsActiveForExactlyThatSecond()
    {
        var c = ExampleCampaign() with { DatetimeStart = 100, DatetimeEnd = 101 };

        Assert.Equal([false, true, false], new[] { 99L, 100L, 101L }.Select(c.IsActiveAt));
    }

    [Fact]
    public void KeyIsThePairOfParsedIdsAndIgnoresTheOtherFields()
    {
        var a = ExampleCampaign();
        var b = a with { Content = "other text", DatetimeEnd = End + 1 };

        Assert.Equal(new CampaignKey(new Guid(Restaurant), new Guid(CampaignId)), a.Key);
        Assert.Equal(a.Key, b.Key);
        Assert.NotEqual(a, b);
    }

    [Fact]
    public void ReplacingAnIdWithWithUpdatesTheKey()
    {
        const string otherRestaurant = "223e4567-e89b-12d3-a456-426614174000";
        const string otherCampaign = "323e4567-e89b-12d3-a456-426614174003";

        var c = ExampleCampaign() with { RestaurantId = otherRestaurant, AdvCampaignId = otherCampaign };

        Assert.Equal(new CampaignKey(new Guid(otherRestaurant), new Guid(otherCampaign)), c.Key);
    }

    [Theory]
    [InlineData("not-a-uuid", CampaignId)]
    [InlineData(Restaurant, " 123e4567-e89b-12d3-a456-426614174003")]
    public void ConstructingWithANonUuidIdThrows(string restaurant, string campaign)
    {
        Assert.Throws<ArgumentException>(() => new Campaign(restaurant, campaign, "c", "o", "x@y", Start, End, Created));
        Assert.Throws<ArgumentException>(() => ExampleCampaign() with { RestaurantId = restaurant, AdvCampaignId = campaign });
    }

    // ---- output ----

    private static JsonDocument Output(Campaign c, string clientId, long trigger = 1732450000) =>
        JsonDocument.Parse(new NotificationTemplate(c, trigger).For(clientId));

    [Fact]
    public void OutputOfTheContractExampleIsByteExact()
    {
        const string expected = """{"restaurant_id":"123e4567-e89b-12d3-a456-426614174000","adv_campaign_id":"123e4567-e89b-12d3-a456-426614174003","adv_campaign_content":"first campaign","adv_campaign_owner":"Ivanov Ivan Ivanovich","adv_campaign_owner_contact":"iiivanov@restaurant.ru","adv_campaign_datetime_start":1659203516,"adv_campaign_datetime_end":2659207116,"datetime_created":1659131516,"client_id":"223e4567-e89b-12d3-a456-426614174000","trigger_datetime_created":1732450000}""";

        var output = new NotificationTemplate(ParseValid(Example), 1732450000).For("223e4567-e89b-12d3-a456-426614174000");

        Assert.Equal(expected, Encoding.UTF8.GetString(output));
    }

    [Fact]
    public void OutputHasExactlyTheTenContractFieldsInOrderWithTheirTypesAndValues()
    {
        using var doc = Output(ExampleCampaign(), "223e4567-e89b-12d3-a456-426614174000");
        var root = doc.RootElement;
        var members = root.EnumerateObject().ToList();

        Assert.Equal(JsonValueKind.Object, root.ValueKind);
        Assert.Equal(OutputFields, members.Select(p => p.Name));
        Assert.All(members.Take(5).Append(members[8]), p => Assert.Equal(JsonValueKind.String, p.Value.ValueKind));
        Assert.All(members.Skip(5).Take(3).Append(members[9]), p => Assert.Equal(JsonValueKind.Number, p.Value.ValueKind));
        Assert.Equal(Restaurant, root.GetProperty("restaurant_id").GetString());
        Assert.Equal(CampaignId, root.GetProperty("adv_campaign_id").GetString());
        Assert.Equal("first campaign", root.GetProperty("adv_campaign_content").GetString());
        Assert.Equal("Ivanov Ivan Ivanovich", root.GetProperty("adv_campaign_owner").GetString());
        Assert.Equal("iiivanov@restaurant.ru", root.GetProperty("adv_campaign_owner_contact").GetString());
        Assert.Equal(Start, root.GetProperty("adv_campaign_datetime_start").GetInt64());
        Assert.Equal(End, root.GetProperty("adv_campaign_datetime_end").GetInt64());
        Assert.Equal(Created, root.GetProperty("datetime_created").GetInt64());
        Assert.Equal("223e4567-e89b-12d3-a456-426614174000", root.GetProperty("client_id").GetString());
        Assert.Equal(1732450000, root.GetProperty("trigger_datetime_created").GetInt64());
    }

    [Fact]
    public void NumbersAreWrittenAsPlainIntegers()
    {
        var c = ExampleCampaign() with { DatetimeStart = 1, DatetimeEnd = MaxUnixSeconds, DatetimeCreated = 1000000 };

        var text = Encoding.UTF8.GetString(new NotificationTemplate(c, 0).For("c"));

        Assert.Contains("\"adv_campaign_datetime_start\":1,", text);
        Assert.Contains("\"adv_campaign_datetime_end\":253402300799,", text);
        Assert.Contains("\"datetime_created\":1000000,", text);
        Assert.EndsWith("\"trigger_datetime_created\":0}", text);
    }

    [Fact]
    public void TrickyTextRoundTripsUnchangedFromInputToOutputWithEmojiAsRawUtf8()
    {
        const string content = "it's \"50%\" off 🍕 \\o/ C:\\temp\\ \n second line\t\r\u0001\u001f '; DROP TABLE x; -- </script> Привет \u2028";
        const string owner = "O'Brien \"Bobby\" 🍔; rm -rf / #";
        const string contact = "a\\b@\"restaurant\".ru'; DROP TABLE subscribers_feedback; --";
        var input = Encoding.UTF8.GetString(Producer(ExampleCampaign() with { Content = content, Owner = owner, OwnerContact = contact }));

        var parsed = ParseValid(input);
        var output = new NotificationTemplate(parsed, 1732450000).For("223e4567-e89b-12d3-a456-426614174000");
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;

        Assert.Equal((content, owner, contact), (parsed.Content, parsed.Owner, parsed.OwnerContact));
        Assert.Equal(content, root.GetProperty("adv_campaign_content").GetString());
        Assert.Equal(owner, root.GetProperty("adv_campaign_owner").GetString());
        Assert.Equal(contact, root.GetProperty("adv_campaign_owner_contact").GetString());
        Assert.True(Utf8.IsValid(output));
        Assert.True(output.AsSpan().IndexOf("🍕"u8) >= 0, "pizza emoji is not raw UTF-8");
        Assert.True(output.AsSpan().IndexOf("🍔"u8) >= 0, "burger emoji is not raw UTF-8");
        Assert.True(output.AsSpan().IndexOf("Привет"u8) >= 0, "Cyrillic is not raw UTF-8");
        Assert.DoesNotContain("\\ud83c", Encoding.UTF8.GetString(output), StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain((byte)'\n', output); // control characters are escaped, so one record is one line
    }

    [Fact]
    public void SpecialCharactersAreEscapedTheShortestStandardWay()
    {
        var c = ExampleCampaign() with { Content = "q\" b\\ n\n t\t r\r b\b f\f u\u0001 x\u001f del\u007f" };

        var text = Encoding.UTF8.GetString(new NotificationTemplate(c, 0).For("c"));

        Assert.Contains("\"adv_campaign_content\":\"q\\\" b\\\\ n\\n t\\t r\\r b\\b f\\f u\\u0001 x\\u001f del\u007f\"", text);
    }

    // How the lead's simulator and a typical producer encode a campaign; the parser must undo exactly that.
    private static byte[] Producer(Campaign c)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("restaurant_id", c.RestaurantId);
            w.WriteString("adv_campaign_id", c.AdvCampaignId);
            w.WriteString("adv_campaign_content", c.Content);
            w.WriteString("adv_campaign_owner", c.Owner);
            w.WriteString("adv_campaign_owner_contact", c.OwnerContact);
            w.WriteNumber("adv_campaign_datetime_start", c.DatetimeStart);
            w.WriteNumber("adv_campaign_datetime_end", c.DatetimeEnd);
            w.WriteNumber("datetime_created", c.DatetimeCreated);
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    [Theory]
    [InlineData("a\"b", "a\\\"b")]
    [InlineData("\"", "\\\"")]
    [InlineData("back\\slash", "back\\\\slash")]
    [InlineData("line\nbreak", "line\\nbreak")]
    [InlineData("bell\u0007", "bell\\u0007")]
    [InlineData("'; DROP TABLE x; --", "'; DROP TABLE x; --")]
    [InlineData("клиент 🍕", "клиент 🍕")]
    [InlineData("", "")]
    public void ClientIdIsEscapedExactlyAndDecodesBackToItself(string clientId, string escaped)
    {
        var output = new NotificationTemplate(ExampleCampaign(), 7).For(clientId);
        using var doc = JsonDocument.Parse(output);

        Assert.Equal(clientId, doc.RootElement.GetProperty("client_id").GetString());
        Assert.EndsWith($",\"client_id\":\"{escaped}\",\"trigger_datetime_created\":7}}", Encoding.UTF8.GetString(output));
    }

    [Fact]
    public void AnUnpairedSurrogateInAClientIdBecomesTheReplacementCharacterNotInvalidUtf8()
    {
        var output = new NotificationTemplate(ExampleCampaign(), 7).For("x\ud800y");
        using var doc = JsonDocument.Parse(output);

        Assert.True(Utf8.IsValid(output));
        Assert.Equal("x\ufffdy", doc.RootElement.GetProperty("client_id").GetString());
    }

    [Fact]
    public void EachRecordIsItsOwnExactSizeArray()
    {
        var template = new NotificationTemplate(ExampleCampaign(), 1732450000);
        var expectedLength = Example.Length - 1 + ",\"client_id\":\"\",\"trigger_datetime_created\":1732450000}".Length;

        var first = template.For("a");
        var second = template.For("b\"");
        var firstCopy = first.ToArray();
        Assert.Equal(expectedLength + 1, first.Length);
        Assert.Equal(expectedLength + 3, second.Length); // b\" is three bytes once escaped

        Array.Clear(second);
        var third = template.For("a");

        Assert.Equal(firstCopy, first);
        Assert.Equal(first, third);
        Assert.NotSame(first, third);
    }

    [Fact]
    public void IntoWritesOverABufferOfExactlyTheSizeAndAllocatesForAnyOther()
    {
        var template = new NotificationTemplate(ExampleCampaign(), 1732450000);
        var first = template.For("aaaa");

        var reused = template.Into("bbbb", first);
        var grown = template.Into("ccccc", reused);
        var escaped = template.Into("dd\"", template.For("eeee")); // an id to escape: written to a fresh array

        Assert.Same(first, reused);
        Assert.Equal(template.For("bbbb"), reused);
        Assert.NotSame(reused, grown);
        Assert.Equal(template.For("ccccc"), grown);
        Assert.Equal(template.For("dd\""), escaped);
    }

    [Fact]
    public void KeyIntoWritesTheClientIdOverABufferOfExactlyTheSizeAndAllocatesForAnyOther()
    {
        var first = NotificationTemplate.KeyInto("aaaa", []);
        Assert.Equal("aaaa"u8.ToArray(), first);

        var reused = NotificationTemplate.KeyInto("bbbb", first);
        var grown = NotificationTemplate.KeyInto("cccé", reused); // é is two bytes in UTF-8

        Assert.Same(first, reused);
        Assert.Equal("bbbb"u8.ToArray(), reused);
        Assert.NotSame(reused, grown);
        Assert.Equal("cccé"u8.ToArray(), grown);
    }

    [Fact]
    public void OutputIsAlsoAValidInputDescribingTheSameCampaign()
    {
        var campaign = ExampleCampaign() with { Content = "\"quoted\" 🍕 \\ \n" };

        var output = new NotificationTemplate(campaign, 1732450000).For("223e4567-e89b-12d3-a456-426614174000");

        Assert.True(CampaignParser.TryParse(output, out var reparsed, out var reason), reason);
        Assert.Equal(campaign, reparsed);
    }
}
